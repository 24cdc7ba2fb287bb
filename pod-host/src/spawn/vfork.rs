//! The raw process creation behind [`super::Spawner`]: `clone(CLONE_VM |
//! CLONE_VFORK)`, the same primitive glibc's `posix_spawn` uses, plus the
//! steps `posix_spawn` cannot do (`PR_SET_PDEATHSIG`, the parent check).
//!
//! Why not `fork`: a fork copies the host's page tables (a multi-threaded
//! tokio process with a heap), the child then pays copy-on-write faults,
//! and its exec tears that copy down again; the parent pays COW faults too.
//! A `CLONE_VM` child borrows the parent's memory and runs on its own small
//! stack, and `CLONE_VFORK` suspends the calling thread (only it) until the
//! child has exec'd or exited, so the argument block below stays valid and
//! the child can report a failure by writing it into that block.
//!
//! Rules for the child (it shares the parent's memory and TLS): no heap
//! allocation, no locks, no unwinding; only plain system-call wrappers.
//! Everything it needs (paths, argv, envp, descriptors, the empty signal
//! mask) is prepared by the parent. The parent blocks every signal around
//! `clone` so no handler of the host can run on the child; the child resets
//! every caught signal to its default action (and SIGPIPE, which the Rust
//! runtime ignores, like `std::process::Command` does) before unblocking.

use std::ffi::{CStr, CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

/// Stack of the short-lived child (it only makes system calls).
const CHILD_STACK: usize = 64 * 1024;

/// The shell of execvp's ENOEXEC fallback.
const SH: &CStr = c"/bin/sh";

/// Signals are 1..NSIG (65 on Linux).
const NSIG: c_int = 65;

/// Everything the child needs, as raw pointers into memory the parent keeps
/// alive (and does not touch) until `clone` returns.
#[repr(C)]
struct ChildArgs {
    /// Null-terminated list of paths to try, in order (PATH search).
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    /// `/bin/sh`, a slot for the script's path, then argv[1..]: execvp's
    /// fallback for a file the kernel cannot execute (a script without a
    /// `#!` line). The child fills the slot.
    sh_argv: *mut *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// Sources for fds 0, 1, 2, 3; all ≥ 4 (see [`above_stdio`]).
    fds: [RawFd; 4],
    parent: libc::pid_t,
    /// Run as this uid/gid (no supplementary groups) when `set_ids`.
    set_ids: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    empty_mask: libc::sigset_t,
    /// Set by the child to its errno when it fails before exec.
    err: AtomicI32,
    /// The [`Step`] the child was at (meaningful when `err` is set).
    step: AtomicI32,
}

/// What the child was doing when it failed, so the error can say which
/// part of the template is wrong (a missing working directory and a
/// missing program both fail with ENOENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Step {
    /// Process group, descriptors, death signal: host-side trouble.
    Setup = 0,
    /// `chdir` to the working directory.
    Chdir = 1,
    /// `execve` of the program.
    Exec = 2,
}

impl Step {
    fn from_raw(v: i32) -> Self {
        match v {
            1 => Step::Chdir,
            2 => Step::Exec,
            _ => Step::Setup,
        }
    }
}

/// A prepared program: where to look for it, argv, envp, working dir.
pub struct Exec {
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// (uid, gid) to run as; `None`: the host's own.
    pub ids: Option<(u32, u32)>,
}

/// A reusable stack for the child, with a guard page below it.
pub struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value.
unsafe impl Send for ChildStack {}

impl ChildStack {
    pub fn new() -> io::Result<Self> {
        let page = page_size();
        let len = CHILD_STACK + page;
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // SAFETY: the lowest page of our own mapping becomes the guard.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // Stacks grow down on every Linux target we build for; the top of a
        // page-aligned mapping is 16-byte aligned.
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no child runs on it (CLONE_VFORK).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// Returns `fd` itself if it is ≥ 4, else a close-on-exec duplicate ≥ 4, so
/// the child's `dup2` onto 0..=3 can never overwrite a source it still needs.
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 4 {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 4) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// Starts `exec` with `fds` as its fds 0..=3 (each ≥ 4, close-on-exec).
/// Returns the pid once the child has exec'd; an error if it could not
/// (the child is reaped then).
pub fn spawn(exec: &Exec, fds: [&OwnedFd; 4], stack: &mut ChildStack) -> io::Result<libc::pid_t> {
    let candidates = ptrs(&exec.candidates);
    let argv = ptrs(&exec.argv);
    let mut sh_argv: Vec<*const libc::c_char> = [SH.as_ptr(), ptr::null()]
        .into_iter()
        .chain(argv.iter().skip(1).copied())
        .collect();
    let envp = ptrs(&exec.envp);
    // SAFETY: sigset_t is plain data, initialised by sigemptyset/sigfillset.
    let (empty, all) = unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigfillset(&mut all);
        (empty, all)
    };
    let args = ChildArgs {
        candidates: candidates.as_ptr(),
        argv: argv.as_ptr(),
        sh_argv: sh_argv.as_mut_ptr(),
        envp: envp.as_ptr(),
        cwd: exec.cwd.as_ptr(),
        fds: fds.map(|f| f.as_raw_fd()),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        set_ids: exec.ids.is_some(),
        uid: exec.ids.map_or(0, |(u, _)| u),
        gid: exec.ids.map_or(0, |(_, g)| g),
        empty_mask: empty,
        err: AtomicI32::new(0),
        step: AtomicI32::new(Step::Setup as i32),
    };
    debug_assert!(args.fds.iter().all(|&fd| fd >= 4));
    // SAFETY: see the module docs. `args`, the pointer arrays and `stack`
    // outlive the child's use of them: CLONE_VFORK returns only after the
    // child exec'd or exited. Signals are blocked across clone so no host
    // handler runs on the child's stack before it resets them.
    let pid = unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut c_void,
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            return Err(clone_err);
        }
        pid
    };
    match args.err.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            // It exited (127) without exec: reap it.
            let mut status = 0;
            // SAFETY: our own child.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            Err(describe(
                exec,
                Step::from_raw(args.step.load(Ordering::Acquire)),
                io::Error::from_raw_os_error(errno),
            ))
        }
    }
}

/// The child's failure as an error that names what failed (same kind as
/// the system error).
fn describe(exec: &Exec, step: Step, e: io::Error) -> io::Error {
    let program = exec
        .argv
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = match step {
        Step::Setup => "cannot set up the pod process".to_owned(),
        Step::Chdir => format!(
            "cannot enter the working directory {}",
            exec.cwd.to_string_lossy()
        ),
        Step::Exec => format!("cannot execute {program}"),
    };
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Kills every process running as `uid` (`kill(-1, SIGKILL)` from a child
/// that becomes `uid`: exactly the processes that uid may signal, i.e. its
/// own). Returns once that child has exited.
pub fn kill_all_of(uid: u32, stack: &mut ChildStack) -> io::Result<()> {
    let mut arg = SweepArgs {
        uid,
        err: AtomicI32::new(0),
    };
    // SAFETY: as in `spawn`: CLONE_VFORK returns after the child exited,
    // so `arg` and `stack` outlive it; the child makes raw system calls
    // only.
    let pid = unsafe {
        libc::clone(
            sweep_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut arg as *mut SweepArgs as *mut c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    match arg.err.load(Ordering::Acquire) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[repr(C)]
struct SweepArgs {
    uid: u32,
    err: AtomicI32,
}

extern "C" fn sweep_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `SweepArgs`, alive while the parent is
    // suspended by CLONE_VFORK; raw system calls only (see `child_main`).
    unsafe {
        let a = &*(arg as *const SweepArgs);
        if libc::syscall(libc::SYS_setresgid, a.uid, a.uid, a.uid) != 0
            || libc::syscall(libc::SYS_setresuid, a.uid, a.uid, a.uid) != 0
        {
            a.err
                .store((*libc::__errno_location()).max(1), Ordering::Release);
            libc::_exit(1);
        }
        // ESRCH (nothing left to kill) is the usual, good outcome.
        libc::kill(-1, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// The child, between clone and exec.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and unchanged while
    // the parent is suspended by CLONE_VFORK. Only async-signal-safe,
    // non-allocating libc wrappers are called below.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |errno: c_int| -> c_int {
            a.err.store(errno.max(1), Ordering::Release);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();

        // Caught signals back to default (a host handler must never run
        // here); SIGPIPE too, as std does for its children.
        for sig in 1..NSIG {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, ptr::null(), &mut old) != 0 {
                continue; // glibc's internal signals: not settable
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if caught || sig == libc::SIGPIPE {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, ptr::null_mut());
            }
        }
        // Its own process group, led by itself.
        if libc::setpgid(0, 0) != 0 {
            return fail(errno());
        }
        // stdin, stdout, stderr, status fd (dup2 clears close-on-exec).
        for (target, &src) in a.fds.iter().enumerate() {
            if libc::dup2(src, target as c_int) < 0 {
                return fail(errno());
            }
        }
        // Become the pod's user. Raw system calls: glibc's wrappers would
        // try to change every thread of the *host* (this child shares its
        // memory and so its thread list). Before chdir, so the pod's own
        // permissions decide whether it may enter its dir; before the
        // death signal, because a credential change clears it.
        if a.set_ids
            && (libc::syscall(libc::SYS_setgroups, 0, ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, a.gid, a.gid, a.gid) != 0
                || libc::syscall(libc::SYS_setresuid, a.uid, a.uid, a.uid) != 0)
        {
            return fail(errno());
        }
        a.step.store(Step::Chdir as i32, Ordering::Release);
        if libc::chdir(a.cwd) != 0 {
            return fail(errno());
        }
        a.step.store(Step::Setup as i32, Ordering::Release);
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return fail(errno());
        }
        // The host may have died between clone and prctl: then the signal
        // will never come, so do not start at all.
        if libc::getppid() != a.parent {
            return fail(libc::ESRCH);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &a.empty_mask, ptr::null_mut());

        // execvp's search rules, on paths the parent prepared.
        a.step.store(Step::Exec as i32, Ordering::Release);
        let mut denied = false;
        let mut c = a.candidates;
        while !(*c).is_null() {
            libc::execve(*c, a.argv, a.envp);
            match errno() {
                libc::ENOEXEC => {
                    // Like execvp: a file without a recognised format is a
                    // shell script.
                    *a.sh_argv.add(1) = *c;
                    libc::execve(SH.as_ptr(), a.sh_argv, a.envp);
                    return fail(errno());
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                e => return fail(e),
            }
            c = c.add(1);
        }
        fail(if denied { libc::EACCES } else { libc::ENOENT })
    }
}

/// The paths execvp would try for `program` with `path` (the pod's PATH):
/// the program itself if it names a path, else each PATH entry joined with
/// it (an empty entry is the working directory, as in execvp).
pub fn candidates(program: &CStr, path: &[u8]) -> Vec<CString> {
    let name = program.to_bytes();
    if name.contains(&b'/') {
        return vec![program.to_owned()];
    }
    path.split(|&b| b == b':')
        .filter_map(|dir| {
            let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
            if !dir.is_empty() {
                p.extend_from_slice(dir);
                p.push(b'/');
            }
            p.extend_from_slice(name);
            CString::new(p).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_execvp() {
        let c = |p: &str, path: &str| -> Vec<String> {
            candidates(&CString::new(p).unwrap(), path.as_bytes())
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(c("/bin/sh", "/usr/bin"), vec!["/bin/sh"]);
        assert_eq!(c("./run", "/usr/bin"), vec!["./run"]);
        assert_eq!(
            c("sleep", "/usr/local/bin::/bin"),
            vec!["/usr/local/bin/sleep", "sleep", "/bin/sleep"]
        );
    }
}
