//! Device control on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built here from deny
//! rules, loaded with bpf(2) and attached to a job's group, as runc and youki do (v1 has
//! `devices.deny` files instead, and v2 has no device controller).
//!
//! ```text
//!   rules (char 195:1 rwm, …) ──▶ program(): instructions (pure; unit-tested below)
//!     ──▶ Program::load: BPF_PROG_LOAD (on refusal, again with a log: the verifier's words
//!                        go into the error)
//!     ──▶ Program::attach(JOB_DIR): BPF_PROG_ATTACH, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI
//!   the kernel runs it on every open or mknod of a device node by a process in the group:
//!     r1 = &bpf_cgroup_dev_ctx { access_type = access << 16 | type, major, minor }
//!     r0 = 1 allows, 0 denies (EPERM); programs attached above the group run too, and
//!     any one of them denying is enough
//! ```
//!
//! The policy is a deny-list, like the v1 path: everything is allowed except the listed
//! devices for the listed accesses. A rule matches a request that asks for any of its
//! accesses, as v1's `devices.deny` does. The program holds no maps and calls no helpers,
//! so its license string does not matter to the kernel (only GPL-only helpers need "GPL").
//!
//! The program stays attached while the group lives: the kernel drops it with the group, so
//! there is nothing to detach.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A device node's type, as the kernel tells the program (`BPF_DEVCG_DEV_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Block,
    Char,
}

impl DeviceKind {
    fn code(self) -> i32 {
        match self {
            DeviceKind::Block => 1,
            DeviceKind::Char => 2,
        }
    }
}

/// Accesses to a device node (`BPF_DEVCG_ACC_*`), as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    /// Read, write and mknod: `rwm` in v1's `devices.deny`.
    pub const ALL: Access = Access(7);
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

/// Deny `access` to the device node `kind major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: u64,
    pub minor: u64,
    pub access: Access,
}

impl DeviceRule {
    /// Read, write and mknod of a character device: how a GPU is denied.
    pub fn char_rwm(major: u64, minor: u64) -> Self {
        DeviceRule { kind: DeviceKind::Char, major, minor, access: Access::ALL }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {major}:{minor}: not a Linux device number")]
    Number { major: u64, minor: u64 },
    #[error("loading the cgroup v2 device program (bpf BPF_PROG_LOAD): {source}{}", verifier(log))]
    Load { source: io::Error, log: String },
    #[error("{}: cannot open the cgroup to attach its device program: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{}: attaching the device program (bpf BPF_PROG_ATTACH, BPF_CGROUP_DEVICE): {source}{}",
        path.display(),
        if source.raw_os_error() == Some(libc::EBADF) { " (not a cgroup v2 directory)" } else { "" }
    )]
    Attach { path: PathBuf, source: io::Error },
}

fn verifier(log: &str) -> String {
    match log.trim() {
        "" => String::new(),
        log => format!("; verifier log:\n{log}"),
    }
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4`, bit-fields in the machine's order.
    regs: u8,
    off: i16,
    imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

// Opcodes: class | operation | source (linux/bpf_common.h, linux/bpf.h), with the classes
// LDX 0x01, JMP 0x05, ALU64 0x07 and the sources K (immediate) 0x00, X (register) 0x08.
const LDX_MEM_W: u8 = 0x61; // LDX | MEM 0x60 | W 0x00: dst = *(u32 *)(src + off)
const ALU64_MOV_X: u8 = 0xbf; // ALU64 | MOV 0xb0 | X: dst = src
const ALU64_MOV_K: u8 = 0xb7; // ALU64 | MOV | K: dst = imm
const ALU64_AND_K: u8 = 0x57; // ALU64 | AND 0x50 | K: dst &= imm
const ALU64_RSH_K: u8 = 0x77; // ALU64 | RSH 0x70 | K: dst >>= imm
const JMP_JEQ_K: u8 = 0x15; // JMP | JEQ 0x10 | K: if dst == imm { pc += off }
const JMP_JNE_K: u8 = 0x55; // JMP | JNE 0x50 | K: if dst != imm { pc += off }
const JMP_EXIT: u8 = 0x95; // JMP | EXIT 0x90: return r0

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        let regs = if cfg!(target_endian = "little") { (src << 4) | dst } else { (dst << 4) | src };
        Insn { code, regs, off, imm }
    }
    const fn load_u32(dst: u8, src: u8, off: i16) -> Self {
        Self::new(LDX_MEM_W, dst, src, off, 0)
    }
    const fn mov(dst: u8, src: u8) -> Self {
        Self::new(ALU64_MOV_X, dst, src, 0, 0)
    }
    const fn mov_imm(dst: u8, imm: i32) -> Self {
        Self::new(ALU64_MOV_K, dst, 0, 0, imm)
    }
    const fn and_imm(dst: u8, imm: i32) -> Self {
        Self::new(ALU64_AND_K, dst, 0, 0, imm)
    }
    const fn rsh_imm(dst: u8, imm: i32) -> Self {
        Self::new(ALU64_RSH_K, dst, 0, 0, imm)
    }
    /// `if dst == imm` jump; the offset is set once the rule's block is complete.
    const fn jeq_imm(dst: u8, imm: i32) -> Self {
        Self::new(JMP_JEQ_K, dst, 0, 0, imm)
    }
    const fn jne_imm(dst: u8, imm: i32) -> Self {
        Self::new(JMP_JNE_K, dst, 0, 0, imm)
    }
    const fn exit() -> Self {
        Self::new(JMP_EXIT, 0, 0, 0, 0)
    }
    #[cfg(test)]
    fn dst(self) -> usize {
        usize::from(if cfg!(target_endian = "little") { self.regs & 0xf } else { self.regs >> 4 })
    }
    #[cfg(test)]
    fn src(self) -> usize {
        usize::from(if cfg!(target_endian = "little") { self.regs >> 4 } else { self.regs & 0xf })
    }
}

// Registers: r0 the verdict, r1 the context on entry; r2-r5 hold what the context says.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;
const SCRATCH: u8 = 6;

/// The program for `deny`: every device allowed except those the rules deny.
///
/// ```text
///   r2 = ctx->access_type; r3 = r2; r2 &= 0xffff (type); r3 >>= 16 (access)
///   r4 = ctx->major; r5 = ctx->minor
///   per rule: if r2 != type goto next; [r6 = r3; r6 &= access; if r6 == 0 goto next]
///             if r4 != major goto next; if r5 != minor goto next; r0 = 0; exit
///   next: …   r0 = 1; exit
/// ```
pub fn program(deny: &[DeviceRule]) -> Result<Vec<Insn>, DeviceError> {
    let mut p = vec![
        Insn::load_u32(TYPE, R1, 0),
        Insn::mov(ACCESS, TYPE),
        Insn::and_imm(TYPE, 0xffff),
        Insn::rsh_imm(ACCESS, 16),
        Insn::load_u32(MAJOR, R1, 4),
        Insn::load_u32(MINOR, R1, 8),
    ];
    for rule in deny {
        // The kernel's device numbers have 12 bits of major and 20 of minor: anything larger
        // names no device, and would not survive the sign extension of an immediate.
        let number = |n: u64, bits: u32| {
            i32::try_from(n)
                .ok()
                .filter(|&n| n < 1 << bits)
                .ok_or(DeviceError::Number { major: rule.major, minor: rule.minor })
        };
        let (major, minor) = (number(rule.major, 12)?, number(rule.minor, 20)?);
        let mut block = vec![Insn::jne_imm(TYPE, rule.kind.code())];
        if rule.access != Access::ALL {
            block.push(Insn::mov(SCRATCH, ACCESS));
            block.push(Insn::and_imm(SCRATCH, i32::from(rule.access.0)));
            block.push(Insn::jeq_imm(SCRATCH, 0));
        }
        block.push(Insn::jne_imm(MAJOR, major));
        block.push(Insn::jne_imm(MINOR, minor));
        block.push(Insn::mov_imm(R0, 0));
        block.push(Insn::exit());
        // Every conditional jump of the block goes to the next rule: just past the block.
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.code == JMP_JNE_K || insn.code == JMP_JEQ_K {
                insn.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(Insn::mov_imm(R0, 1));
    p.push(Insn::exit());
    Ok(p)
}

/// A device program loaded into the kernel, until it is attached (or dropped).
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to the fields used here; the kernel
/// takes the rest as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

// No padding anywhere: the kernel reads every byte given to it.
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);
const _: () = assert!(std::mem::size_of::<ProgAttachAttr>() == 20);

/// bpf(2).
///
/// # Safety
/// Every pointer in `attr` must be valid for what the command does with it (read the
/// instructions and license, write the log) for the length the attribute gives.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a `#[repr(C)]` prefix of `union bpf_attr` without padding, alive for
    // the call, and its size is passed with it; the caller vouches for its pointers.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

impl Program {
    /// Loads a device program. When the kernel refuses it, the error carries its reason and
    /// the verifier's log.
    pub fn load(insns: &[Insn]) -> Result<Self, DeviceError> {
        match load(insns, None) {
            Ok(fd) => Ok(Program { fd }),
            Err(first) => {
                // Again, asking for the verifier's log this time.
                let mut log = vec![0u8; 256 * 1024];
                match load(insns, Some(&mut log)) {
                    Ok(fd) => Ok(Program { fd }),
                    Err(source) => {
                        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                        let log = String::from_utf8_lossy(&log[..end]).into_owned();
                        let source = if log.is_empty() { first } else { source };
                        Err(DeviceError::Load { source, log })
                    }
                }
            }
        }
    }

    /// Attaches the program to the cgroup v2 directory `group`, beside those attached above
    /// it (`BPF_F_ALLOW_MULTI`), which keep applying.
    pub fn attach(&self, group: &Path) -> Result<(), DeviceError> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(group)
            .map_err(|source| DeviceError::Open { path: group.to_owned(), source })?;
        let mut attr = ProgAttachAttr {
            target_fd: dir.as_raw_fd() as u32,
            attach_bpf_fd: self.fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: BPF_F_ALLOW_MULTI,
            replace_bpf_fd: 0,
        };
        // SAFETY: the attribute holds two descriptors, open for the call, and no pointers.
        unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }
            .map(drop)
            .map_err(|source| DeviceError::Attach { path: group.to_owned(), source })
    }
}

fn load(insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"chorus_dev");
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `insns` (insn_cnt instructions of the kernel's layout) and the NUL-terminated
    // license are borrowed for the call; the log buffer, when given, is ours to write for
    // log_size bytes.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor (close-on-exec), owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the program denying `rules` and attaches it to `group`.
pub fn deny(group: &Path, rules: &[DeviceRule]) -> Result<(), DeviceError> {
    Program::load(&program(rules)?)?.attach(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program the way the kernel would on one request, for the few instructions
    /// `program` emits. r1 stands for the context until it is overwritten.
    fn run(p: &[Insn], kind: DeviceKind, access: Access, major: u32, minor: u32) -> u64 {
        let ctx = [(u32::from(access.0) << 16) | kind.code() as u32, major, minor];
        let mut r = [0u64; 11];
        let mut r1_is_ctx = true;
        let mut pc = 0;
        loop {
            let i = p[pc];
            pc += 1;
            let imm = i.imm as i64 as u64;
            match i.code {
                LDX_MEM_W => {
                    assert!(i.src() == 1 && r1_is_ctx, "loads only from the context");
                    r[i.dst()] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU64_MOV_X => r[i.dst()] = r[i.src()],
                ALU64_MOV_K => r[i.dst()] = imm,
                ALU64_AND_K => r[i.dst()] &= imm,
                ALU64_RSH_K => r[i.dst()] >>= imm,
                JMP_JEQ_K if r[i.dst()] == imm => pc += i.off as usize,
                JMP_JNE_K if r[i.dst()] != imm => pc += i.off as usize,
                JMP_JEQ_K | JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
            if i.dst() == 1 && i.code != JMP_JEQ_K && i.code != JMP_JNE_K {
                r1_is_ctx = false;
            }
        }
    }

    use DeviceKind::{Block, Char};

    #[test]
    fn without_rules_every_device_is_allowed() {
        let p = program(&[]).unwrap();
        assert_eq!(p.len(), 8);
        for (kind, access) in [(Char, Access::READ), (Block, Access::WRITE), (Char, Access::MKNOD)]
        {
            assert_eq!(run(&p, kind, access, 195, 0), 1);
        }
    }

    #[test]
    fn a_denied_gpu_cannot_be_read_written_or_made_and_the_rest_can() {
        let p = program(&[DeviceRule::char_rwm(195, 1), DeviceRule::char_rwm(195, 3)]).unwrap();
        for minor in [1, 3] {
            for access in [Access::READ, Access::WRITE, Access::MKNOD, Access::READ | Access::WRITE]
            {
                assert_eq!(run(&p, Char, access, 195, minor), 0, "195:{minor} {access:?}");
            }
        }
        let rw = Access::READ | Access::WRITE;
        assert_eq!(run(&p, Char, rw, 195, 0), 1, "the job's own GPU");
        assert_eq!(run(&p, Char, rw, 195, 255), 1, "nvidiactl");
        assert_eq!(run(&p, Char, rw, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, Block, rw, 195, 1), 1, "a block device of the same numbers");
    }

    #[test]
    fn a_rule_denies_a_request_asking_for_any_of_its_accesses() {
        let p = program(&[DeviceRule {
            kind: Block,
            major: 8,
            minor: 0,
            access: Access::WRITE | Access::MKNOD,
        }])
        .unwrap();
        assert_eq!(run(&p, Block, Access::READ, 8, 0), 1);
        assert_eq!(run(&p, Block, Access::WRITE, 8, 0), 0);
        assert_eq!(run(&p, Block, Access::READ | Access::WRITE, 8, 0), 0, "as v1 devices.deny");
        assert_eq!(run(&p, Block, Access::MKNOD, 8, 0), 0);
        assert_eq!(run(&p, Char, Access::WRITE, 8, 0), 1);
    }

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_with_exit() {
        let rules: Vec<_> = (0..8).map(|m| DeviceRule::char_rwm(195, m)).collect();
        let p = program(&rules).unwrap();
        assert_eq!(p.last(), Some(&Insn::exit()));
        for (pc, i) in p.iter().enumerate() {
            if i.code == JMP_JNE_K || i.code == JMP_JEQ_K {
                let to = pc + 1 + i.off as usize;
                assert!(to < p.len(), "jump at {pc} to {to}");
                // Each rule's jumps go to the first instruction of the next rule or the end.
                assert!(p[to].code == JMP_JNE_K || p[to] == Insn::mov_imm(R0, 1), "{pc}->{to}");
            }
        }
    }

    #[test]
    fn numbers_no_device_can_have_are_refused() {
        for (major, minor) in [(4096, 0), (1, 1 << 20), (u64::from(u32::MAX), 0)] {
            let err = program(&[DeviceRule::char_rwm(major, minor)]).unwrap_err();
            assert!(matches!(err, DeviceError::Number { .. }), "{major}:{minor}: {err}");
        }
        assert!(program(&[DeviceRule::char_rwm(4095, (1 << 20) - 1)]).is_ok());
    }

    #[test]
    fn the_kernel_accepts_the_program_and_its_refusals_carry_the_verifier_log() {
        if !nix::unistd::geteuid().is_root() {
            crate::testing::skip("bpf load: not root");
            return;
        }
        let rules = [DeviceRule::char_rwm(195, 1), DeviceRule::char_rwm(195, 2)];
        if let Err(e) = Program::load(&program(&rules).unwrap()) {
            panic!("the verifier refused the device program: {e}");
        }
        // r0 is never set: the verifier must refuse, and say why.
        let err = Program::load(&[Insn::exit()]).unwrap_err().to_string();
        eprintln!("a program the kernel refuses: {err}");
        assert!(err.contains("verifier log") && err.contains("R0"), "{err}");
    }
}
