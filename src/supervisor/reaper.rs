//! The reaper: a small process between livelens and each child it runs, so that nothing a child
//! started outlives livelens, even when livelens is killed with SIGKILL.
//!
//! `PR_SET_PDEATHSIG` reaches only the direct child; a shell's background job (`sleep 300 &`)
//! would be orphaned to init and run on. So livelens runs `livelens reap -- PROGRAM ARGS…` as the
//! leader of a new process group. The reaper starts the program in that same group and holds the
//! read end of a pipe (its "lifeline", fd 3) whose only write end livelens holds. When livelens
//! is gone — exited, crashed or SIGKILLed — the kernel closes the write end, the reaper reads
//! EOF and SIGKILLs its whole group, itself included. While livelens lives, the reaper ignores
//! SIGTERM and SIGINT (a graceful stop is for the program, which gets the group's SIGTERM) and
//! exits as the program did, so livelens sees the program's status.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The descriptor the reaper finds its lifeline on.
pub const LIFELINE_FD: i32 = 3;

static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();

/// Children are run through `exe reap` from now on. Called by the `livelens` binary at start;
/// without it (the library in tests, benchmarks) children are spawned directly.
pub fn enable(exe: PathBuf) {
    let _ = EXECUTABLE.set(exe);
}

pub(crate) fn executable() -> Option<&'static Path> {
    EXECUTABLE.get().map(PathBuf::as_path)
}

/// A pipe whose ends are closed on exec: (read, write).
pub(crate) fn lifeline() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `livelens reap -- PROGRAM ARGS…`: runs the program and returns the exit code to leave with
/// (or does not return: it ends the way the program ended, or with the whole group).
pub fn run(program: &str, args: &[String]) -> i32 {
    // SAFETY: changing signal dispositions of this single-threaded process.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        // The lifeline is not the program's business.
        libc::fcntl(LIFELINE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let mut command = std::process::Command::new(program);
    command.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            match e.kind() {
                std::io::ErrorKind::NotFound => {
                    eprintln!("command not found: {program:?} (is it installed and on PATH?)")
                }
                std::io::ErrorKind::PermissionDenied => {
                    eprintln!("cannot run {program:?}: permission denied")
                }
                _ => eprintln!("cannot run {program:?}: {e}"),
            }
            return 127;
        }
    };
    let watcher = std::thread::Builder::new()
        .name("lifeline".into())
        .spawn(|| {
            let mut byte = 0u8;
            loop {
                // SAFETY: reads at most one byte into a local.
                let n = unsafe { libc::read(LIFELINE_FD, (&raw mut byte).cast(), 1) };
                let interrupted = n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
                if !interrupted {
                    break;
                }
            }
            // livelens is gone (EOF), or the lifeline is unusable: take the whole group.
            // SAFETY: kill(2) on our own process group.
            unsafe { libc::kill(0, libc::SIGKILL) };
        });
    if watcher.is_err() {
        let _ = child.kill();
        return 125;
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(_) => return 125,
    };
    if let Some(signal) = status.signal() {
        // End the same way, so livelens reports "killed by signal N".
        // SAFETY: restoring the default action and raising a signal on ourselves.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    status.code().unwrap_or(125)
}
