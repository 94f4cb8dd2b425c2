//! Runs a function's binary the way Lambda does: a fresh process with Lambda's
//! environment (and nothing else), polling a local Runtime API for events.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};

use crate::runtime_api::RuntimeApi;

/// Where the built binaries are: `PAYWALL_BIN_DIR`, else the workspace's
/// `target/<profile>` (`debug` unless `release` is asked for).
pub fn binary_dir(profile: &str) -> PathBuf {
    match std::env::var_os("PAYWALL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join(profile)
        }
    }
}

/// The command that starts `binary` as Lambda does: Lambda's reserved variables (and
/// nothing else from this process), polling the Runtime API at `runtime_api`, dummy AWS
/// credentials of the function's role (so no request can leave loopback, and each call
/// is held to the role's policy), and `config`. Standard streams are the caller's choice.
pub fn lambda_command(binary: &Path, runtime_api: &str, config: &[(&str, String)]) -> Command {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", &name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .env("AWS_REGION", "us-east-1")
        // The function's role, as the local engines know it (see crate::iam): its
        // calls are held to its policy in template.yaml.
        .env("AWS_ACCESS_KEY_ID", crate::iam::access_key_for(&name))
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_SESSION_TOKEN", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (key, value) in config {
        command.env(key, value);
    }
    command
}

pub struct RunningFunction {
    pub runtime: RuntimeApi,
    child: Child,
    spawned_at: Instant,
    /// The function's log (its stdout), when kept to be counted.
    log: Option<ChildStdout>,
}

/// What a function wrote to its log (stdout): what CloudWatch Logs would ingest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogVolume {
    pub bytes: u64,
    pub lines: u64,
}

impl RunningFunction {
    /// Starts `binary` with Lambda's reserved variables, dummy AWS credentials (so no
    /// request can leave loopback) and `config`. Its log is discarded (at WARN unless
    /// `config` sets `AWS_LAMBDA_LOG_LEVEL`).
    pub async fn spawn(binary: &Path, config: &[(&str, String)]) -> std::io::Result<Self> {
        Self::start(binary, config, false).await
    }

    /// As [`RunningFunction::spawn`], but its log is kept for [`RunningFunction::take_log`]
    /// to count: to measure what a function logs, set `AWS_LAMBDA_LOG_LEVEL` in `config`
    /// (the template's level is INFO) and take the log after each invocation, or the
    /// pipe fills and the function blocks.
    pub async fn spawn_keeping_log(
        binary: &Path,
        config: &[(&str, String)],
    ) -> std::io::Result<Self> {
        Self::start(binary, config, true).await
    }

    async fn start(
        binary: &Path,
        config: &[(&str, String)],
        keep_log: bool,
    ) -> std::io::Result<Self> {
        let runtime = RuntimeApi::start().await?;
        let mut command = lambda_command(binary, runtime.address(), config);
        command
            .stdin(Stdio::null())
            .stdout(if keep_log {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let mut child = command.spawn()?;
        let log = child.stdout.take();
        Ok(Self {
            runtime,
            child,
            spawned_at,
            log,
        })
    }

    /// What the function has logged since the last take (nothing when its log is not
    /// kept). A line is written whole before the invocation's answer is sent (stdout is
    /// line-buffered and tracing writes synchronously), so after an invocation has been
    /// answered its lines are all in the pipe: this reads until the pipe is empty.
    pub async fn take_log(&mut self) -> LogVolume {
        let log = self.take_log_bytes().await;
        LogVolume {
            bytes: log.len() as u64,
            lines: log.iter().filter(|&&b| b == b'\n').count() as u64,
        }
    }

    /// As [`RunningFunction::take_log`], the text itself: for tests of what a line says.
    pub async fn take_log_text(&mut self) -> String {
        String::from_utf8_lossy(&self.take_log_bytes().await).into_owned()
    }

    async fn take_log_bytes(&mut self) -> Vec<u8> {
        let mut taken = Vec::new();
        let Some(log) = self.log.as_mut() else {
            return taken;
        };
        let mut buffer = [0u8; 8192];
        // An empty pipe answers nothing: a read that waits 5 ms finds it empty.
        while let Ok(Ok(read @ 1..)) =
            tokio::time::timeout(Duration::from_millis(5), log.read(&mut buffer)).await
        {
            taken.extend_from_slice(&buffer[..read]);
        }
        taken
    }

    /// CPU time the process (all its threads) has used so far: the sum of each thread's
    /// time on CPU in `/proc/<pid>/task/*/schedstat` (nanoseconds), else `utime + stime`
    /// from `/proc/<pid>/stat` (clock ticks, 10 ms each: only useful over many
    /// invocations).
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.pid()?;
        let from_schedstat = || -> Option<Duration> {
            let mut total = 0u64;
            for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
                let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
            }
            (total > 0).then(|| Duration::from_nanos(total))
        };
        from_schedstat().or_else(|| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command's closing parenthesis; utime and stime are the
            // 14th and 15th of the whole line.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(Duration::from_millis(ticks * 10))
        })
    }

    /// Process start to its first poll of the Runtime API: Lambda's init phase.
    pub async fn init_duration(&self, limit: Duration) -> Option<Duration> {
        self.runtime
            .wait_for_first_poll(limit)
            .await
            .map(|at| at.duration_since(self.spawned_at))
    }

    /// Time since the process was started.
    pub fn since_spawn(&self) -> Duration {
        self.spawned_at.elapsed()
    }

    pub async fn invoke(&self, event: Value) -> Result<Value, String> {
        self.runtime.invoke(event, Duration::from_secs(30)).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits for the process to exit (a failed start) and returns its status and stderr.
    pub async fn exit(mut self, limit: Duration) -> Option<(i32, String)> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()?
            .ok()?;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        Some((status.code().unwrap_or(-1), stderr))
    }
}
