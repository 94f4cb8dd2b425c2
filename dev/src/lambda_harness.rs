//! Runs a function's binary the way Lambda does: a fresh process with Lambda's
//! environment (and nothing else), polling a local Runtime API for events.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

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
}

impl RunningFunction {
    /// Starts `binary` with Lambda's reserved variables, dummy AWS credentials (so no
    /// request can leave loopback) and `config`.
    pub async fn spawn(binary: &Path, config: &[(&str, String)]) -> std::io::Result<Self> {
        let runtime = RuntimeApi::start().await?;
        let mut command = lambda_command(binary, runtime.address(), config);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let child = command.spawn()?;
        Ok(Self {
            runtime,
            child,
            spawned_at,
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
