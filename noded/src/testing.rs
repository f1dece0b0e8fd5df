//! What the node's tests and the end-to-end tests share (as `oci::busybox_bundle` is).

/// Says that a test skips, and why, where CI's log shows it: the harness keeps what a passing
/// test prints with `eprintln!`, not what it writes to the process's stderr.
pub fn skip(why: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {why}");
}
