//! Growing and shrinking a controller group at runtime with real processes:
//! `chorus controller add` brings in a fourth controller that catches up from a snapshot
//! (the leader's log is compacted by then), `chorus controller remove` takes one out, and
//! removing the leader hands leadership over first.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_integration::{Cluster, ClusterOpts, bin_dir};

/// A `ctld --join` this test started, killed when dropped.
struct Joiner(Child);

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_controller_joins_from_a_snapshot_and_controllers_leave() {
    let c = Cluster::start(ClusterOpts {
        controllers: 3,
        snapshot_every: Some(10),
        ..ClusterOpts::default()
    });
    c.wait_group(Duration::from_secs(60));
    let work = c.work();
    // Enough entries for several snapshots: a newcomer cannot be sent the log from index 1.
    let first = c.submit(&["-o", "first.out", "--wrap", "echo before the join"]);
    for _ in 0..15 {
        c.submit(&["--wrap", "true"]);
    }
    c.wait_done(&first.to_string(), Duration::from_secs(60));

    let ports = chorus_cli::free_ports(2).unwrap();
    let (client, peer) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let state = c.dir.path().join("ctld4");
    let log = std::fs::File::create(c.dir.path().join("ctld4.log")).unwrap();
    let _joiner = Joiner(
        Command::new(bin_dir().join("ctld"))
            .args(["--id", "4", "--join", "--listen", &client, "--peer-listen", &peer])
            .arg("--state-dir")
            .arg(&state)
            // The group's CA: a controller joining is given the same one.
            .arg("--ca-dir")
            .arg(c.ca_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_until("the new controller listens", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&peer).is_ok()
    });
    let added = c.run("chorus", &["controller", "add", &peer]);
    assert!(added.status.success(), "{}", text(&added));
    let listed = String::from_utf8_lossy(&added.stdout).into_owned();
    assert!(listed.contains(&client) && listed.lines().count() == 6, "{listed}");

    // The newcomer catches up: asked alone, it shows the jobs and outputs from before it was
    // born, which only a snapshot (with its side tables) could have brought.
    let at_new = |prog: &str, args: &[&str]| {
        c.run_with(&work, prog, args, &[("CHORUS_CONTROLLERS", client.as_str())])
    };
    wait_until("the new controller has the jobs", Duration::from_secs(60), || {
        text(&at_new("sacct", &["-X", "-n", "-j", &first.to_string(), "-o", "State"]))
            .contains("COMPLETED")
    });
    std::fs::remove_file(work.join("first.out")).unwrap();
    let out = at_new("chorus", &["output", &first.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(work.join("first.out")).unwrap(), "before the join\n");
    let log = std::fs::read_to_string(c.dir.path().join("ctld4.log")).unwrap();
    assert!(log.contains("installed a snapshot from the leader"), "{log}");

    // A job submitted through the group now is replicated to the newcomer too.
    let later = c.submit(&["--wrap", "true"]);
    c.wait_done(&later.to_string(), Duration::from_secs(60));
    wait_until("the new controller sees the new job", Duration::from_secs(30), || {
        text(&at_new("sacct", &["-X", "-n", "-j", &later.to_string(), "-o", "State"]))
            .contains("COMPLETED")
    });

    // Remove it again: the group is three.
    let removed = c.run("chorus", &["controller", "remove", "4"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!String::from_utf8_lossy(&removed.stdout).contains(&client));

    // Remove the leader: it hands over, the CLI retries at the new leader, two remain.
    let leader = c.wait_group(Duration::from_secs(30));
    let listed = text(&c.run("chorus", &["controller", "list"]));
    let leader_id = listed
        .lines()
        .find(|l| l.contains(&leader) && l.contains("leader"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no leader line in\n{listed}"))
        .to_owned();
    let out = c.run("chorus", &["controller", "remove", &leader_id]);
    assert!(out.status.success(), "{}", text(&out));
    let now = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(now.lines().filter(|l| l.contains("127.0.0.1")).count(), 2, "{now}");
    assert!(!now.contains(&format!("{leader} ")), "{now}");
    // Two controllers still make a group that takes jobs.
    let after = c.submit(&["--wrap", "true"]);
    c.wait_done(&after.to_string(), Duration::from_secs(60));
}
