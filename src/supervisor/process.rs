//! One supervised child process (principle 4).
//!
//! - Spawned in a new process group, so a stop reaches everything the command started (a shell's
//!   children, FFmpeg's helpers), with `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with livelens even
//!   when livelens is killed with SIGKILL and has no chance to stop it.
//! - Stop is SIGTERM to the group, a grace period, SIGKILL to the group, and always a `wait`.
//! - A child that exits by itself is reaped at once by whoever awaits [`ChildProcess::wait`]; its
//!   exit status and last stderr lines become the reason shown to the user.
//! - stderr goes to the log, prefixed with the owner's name and rate-limited.
//! - Counted in `child_processes` while it exists; every live group is also registered so a
//!   forced exit (second Ctrl+C) can SIGKILL them all.
//!
//! The parent-death signal fires when the *thread* that spawned the child exits. Children are
//! spawned from tokio worker threads, which live as long as the runtime, and the runtime ends only
//! after every child has been stopped.

use std::collections::{HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::resources::{spawn_task, Counted, Resource};

/// Default time a child gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);
/// stderr lines kept for the exit reason.
const TAIL_LINES: usize = 5;
/// At most this many stderr lines per child are logged per [`LOG_WINDOW`]; the rest are counted.
const LOG_BURST: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Process groups of live children, for [`kill_all_now`].
static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// SIGKILLs every live child group at once. For a forced exit, where there is no time to stop
/// them in order.
pub fn kill_all_now() {
    if let Some(groups) = GROUPS.lock().unwrap().as_ref() {
        for pgid in groups {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Who the child belongs to, for logs ("camera front", "worker whisper").
    pub owner: String,
    pub program: String,
    pub args: Vec<String>,
    /// Capture stdout (a source reads it); otherwise it is discarded.
    pub capture_stdout: bool,
}

pub struct ChildProcess {
    child: Child,
    pgid: i32,
    owner: String,
    program: String,
    stderr: Option<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    exited: Option<ExitStatus>,
    /// The write end of the reaper's lifeline: dropping it (or dying) ends the reaper's group.
    _lifeline: Option<std::os::fd::OwnedFd>,
    _counted: Counted,
}

impl ChildProcess {
    /// Starts the child. The error names the command and what went wrong ("not found").
    pub fn spawn(spec: &ChildSpec) -> Result<ChildProcess, String> {
        // Through the reaper when the binary offers one (see `reaper`): then nothing the command
        // starts outlives livelens. Its lifeline's read end goes to the reaper as fd 3.
        let reaper = super::reaper::executable();
        let lifeline = match reaper {
            Some(_) => Some(
                super::reaper::lifeline()
                    .map_err(|e| format!("cannot run {:?}: {e}", spec.program))?,
            ),
            None => None,
        };
        let mut command = match reaper {
            Some(exe) => {
                let mut c = Command::new(exe);
                c.arg("reap").arg("--").arg(&spec.program);
                c
            }
            None => Command::new(&spec.program),
        };
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(if spec.capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        let lifeline_read = lifeline.as_ref().map(|(read, _)| read.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (dup2, prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = lifeline_read {
                    // dup2 clears close-on-exec on the copy: the reaper keeps it.
                    if libc::dup2(fd, super::reaper::LIFELINE_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    // Without a reaper the parent-death signal is the fallback. (A reaper must
                    // not get it: killed at once, it could not end its group.)
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and exec: then nobody would signal us,
                // and the lifeline we hold would never see EOF.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!(
                    "command not found: {:?} (is it installed and on PATH?)",
                    spec.program
                )
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot run {:?}: permission denied", spec.program)
            }
            _ => format!("cannot run {:?}: {e}", spec.program),
        })?;
        // The reaper has its copy of the read end; ours would keep the lifeline from ever ending.
        let lifeline = lifeline.map(|(_, write)| write);
        let counted = Counted::new(Resource::ChildProcess);
        let pgid = child.id().map_or(0, |p| p as i32);
        GROUPS
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(pgid);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = child.stderr.take().map(|stderr| {
            let (owner, tail) = (spec.owner.clone(), tail.clone());
            spawn_task(log_stderr(owner, stderr, tail))
        });
        tracing::debug!(owner = %spec.owner, pid = pgid, program = %spec.program, "child started");
        Ok(ChildProcess {
            child,
            pgid,
            owner: spec.owner.clone(),
            program: spec.program.clone(),
            stderr,
            tail,
            exited: None,
            _lifeline: lifeline,
            _counted: counted,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits until the child exits by itself, reaps it, and ends what is left of its group.
    /// Cancel-safe: dropping the future leaves the child running and owned.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => {
                tracing::error!(owner = %self.owner, "waiting for a child failed: {e}");
                ExitStatus::from_raw(0)
            }
        };
        self.finish(status).await;
        status
    }

    /// Stops the child: SIGTERM to its group, up to `grace` for it to exit, then SIGKILL to the
    /// group; always reaped. Returns its exit status.
    pub async fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        signal_group(self.pgid, libc::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                tracing::warn!(
                    owner = %self.owner,
                    pid = self.pgid,
                    "child ignored SIGTERM for {grace:?}; sending SIGKILL"
                );
                signal_group(self.pgid, libc::SIGKILL);
                self.child
                    .wait()
                    .await
                    .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL))
            }
        };
        self.finish(status).await;
        status
    }

    /// After the leader exited: kill stragglers of its group, collect the stderr tail.
    async fn finish(&mut self, status: ExitStatus) {
        self.exited = Some(status);
        // The group outlives its leader if the command left children behind; they go too, and
        // stop returns only once they have (bounded: a process in uninterruptible sleep could
        // take longer, and must not hang a stop).
        signal_group(self.pgid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(1);
        while group_alive(self.pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.unregister();
        if let Some(mut task) = self.stderr.take() {
            // stderr closes when the last process of the group is gone, which is now; a process
            // that escaped the group (setsid) could hold it open, so the reader is bounded.
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        tracing::debug!(owner = %self.owner, pid = self.pgid, %status, "child reaped");
    }

    fn unregister(&self) {
        if let Some(groups) = GROUPS.lock().unwrap().as_mut() {
            groups.remove(&self.pgid);
        }
    }

    /// Why the child ended, in words: its status and its last stderr line.
    pub fn describe_exit(&self, status: ExitStatus) -> String {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "ended".to_string(),
        };
        let tail = self.tail.lock().unwrap();
        match tail.back() {
            Some(line) => format!("{} {how}: {line}", self.program),
            None => format!("{} {how}", self.program),
        }
    }
}

impl Drop for ChildProcess {
    /// A child that was never stopped (its owner panicked or was aborted) is killed; tokio reaps
    /// it in the background (`kill_on_drop`), so no zombie is left either.
    fn drop(&mut self) {
        if self.exited.is_none() {
            signal_group(self.pgid, libc::SIGKILL);
            self.unregister();
        }
        if let Some(task) = self.stderr.take() {
            task.abort();
        }
    }
}

/// Whether any process of group `pgid` still runs. Members that already died but were orphaned
/// to init stay as zombies until init reaps them; they are dead and don't count.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence. ESRCH: no process at all, the common case.
    if pgid <= 0 || unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
        })
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) on a process group; ESRCH (already gone) is fine.
        unsafe { libc::kill(-pgid, signal) };
    }
}

async fn log_stderr(
    owner: String,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut window = Instant::now();
    let (mut logged, mut suppressed) = (0u32, 0u32);
    while let Ok(Some(line)) = lines.next_line().await {
        let line = crate::common::mask_credentials(line.trim_end());
        if line.is_empty() {
            continue;
        }
        if window.elapsed() >= LOG_WINDOW {
            if suppressed > 0 {
                tracing::warn!("[{owner}] {suppressed} stderr lines not logged (rate limit)");
            }
            window = Instant::now();
            (logged, suppressed) = (0, 0);
        }
        if logged < LOG_BURST {
            logged += 1;
            tracing::info!("[{owner}] {line}");
        } else {
            suppressed += 1;
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Splits a command line into program and arguments like a POSIX shell does for words: spaces
/// separate, single quotes are literal, double quotes and backslashes escape. No expansion, no
/// pipes: a command that needs them is run as `sh -c '…'`.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated ' quote in the command".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated \" quote in the command".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \" quote in the command".into()),
                    }
                }
            }
            '\\' => {
                let next = chars
                    .next()
                    .ok_or("the command ends with a lone backslash")?;
                word.get_or_insert_with(String::new).push(next);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_commands_like_a_shell() {
        assert_eq!(
            split_command(r#"sh -c 'trap "" TERM; sleep 1000'"#).unwrap(),
            vec!["sh", "-c", r#"trap "" TERM; sleep 1000"#]
        );
        assert_eq!(
            split_command(r#"ffmpeg -i "/a b/c.mp4" x\ y """#).unwrap(),
            vec!["ffmpeg", "-i", "/a b/c.mp4", "x y", ""]
        );
        assert!(split_command("a 'b").unwrap_err().contains("unterminated"));
        assert!(split_command("   ").unwrap_err().contains("empty"));
    }

    fn spec(program: &str, args: &[&str]) -> ChildSpec {
        ChildSpec {
            owner: "test".into(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            capture_stdout: true,
        }
    }

    fn alive(pid: u32) -> bool {
        // A zombie still has a /proc entry; state Z counts as gone-but-unreaped, which we treat
        // as alive (a leak) here.
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[tokio::test]
    async fn a_child_that_exits_is_reaped_with_its_reason() {
        let mut child =
            ChildProcess::spawn(&spec("sh", &["-c", "echo 'bad input' >&2; exit 3"])).unwrap();
        let pid = child.pid();
        let status = child.wait().await;
        assert_eq!(status.code(), Some(3));
        assert_eq!(
            child.describe_exit(status),
            "sh exited with status 3: bad input"
        );
        assert!(!alive(pid), "pid {pid} is still in /proc after wait");
    }

    #[tokio::test]
    async fn not_found_is_named() {
        let e = ChildProcess::spawn(&spec("livelens-no-such-command", &[]))
            .err()
            .unwrap();
        assert!(e.contains("command not found"), "{e}");
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_for_the_whole_group() {
        // The shell ignores SIGTERM and leaves a grandchild in its group.
        let mut child = ChildProcess::spawn(&spec(
            "sh",
            &["-c", "trap '' TERM; sleep 1000 & echo $! >&2; wait"],
        ))
        .unwrap();
        let pid = child.pid();
        let group = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| unsafe { libc::getpgid(*p) } == pid as i32)
                // An orphaned grandchild becomes a zombie of init's: it is dead.
                .filter(|p| {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .count()
        };
        // The trap is set once the shell has started its background child.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group() < 2 {
            assert!(
                Instant::now() < deadline,
                "the shell did not start its child"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let status = child.stop(Duration::from_millis(300)).await;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!alive(pid));
        // Nothing of the group is left.
        assert_eq!(group(), 0);
    }
}
