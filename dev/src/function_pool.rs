//! Several instances of one function polling one Runtime API, as Lambda scales a function:
//! the Runtime API's queue is Lambda's router (each waiting instance takes the next
//! event), and when every instance is busy a new one is started, up to a ceiling — that
//! new instance is a cold start. Used by the load test (`dev -- load`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Child;

use crate::lambda_harness::lambda_command;
use crate::runtime_api::RuntimeApi;

/// How long an invocation may take before it is counted as unanswered: Lambda's timeout
/// in template.yaml is 29 s.
const INVOCATION_LIMIT: Duration = Duration::from_secs(29);

pub struct FunctionPool {
    pub name: String,
    // Before `runtime`, so dropped (killed) first: an instance whose Runtime API stops
    // under it gets an answer without a request id and panics.
    children: Mutex<Vec<Child>>,
    runtime: RuntimeApi,
    binary: PathBuf,
    config: Vec<(&'static str, String)>,
    /// Invocations handed over and not yet answered.
    in_flight: AtomicUsize,
    max_instances: usize,
    /// Instances started because every running one was busy: Lambda's cold starts under
    /// load (the first `initial` are started before the run, warm by the time it begins).
    scale_outs: Mutex<Vec<Instant>>,
}

impl FunctionPool {
    /// Starts `initial` instances of `binary` polling a new Runtime API, and waits until
    /// one of them polls (the others' init overlaps the wait).
    pub async fn start(
        binary: &Path,
        config: &[(&'static str, String)],
        initial: usize,
        max_instances: usize,
    ) -> Result<Self, String> {
        let runtime = RuntimeApi::start()
            .await
            .map_err(|e| format!("Runtime API: {e}"))?;
        let pool = Self {
            name: binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            children: Mutex::new(Vec::new()),
            runtime,
            binary: binary.to_owned(),
            config: config.to_vec(),
            in_flight: AtomicUsize::new(0),
            max_instances: max_instances.max(initial).max(1),
            scale_outs: Mutex::new(Vec::new()),
        };
        for _ in 0..initial.max(1) {
            pool.spawn_instance()?;
        }
        if pool
            .runtime
            .wait_for_first_poll(Duration::from_secs(10))
            .await
            .is_none()
        {
            return Err(format!(
                "{} never polled the Runtime API{}",
                pool.name,
                pool.runtime
                    .init_error()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        Ok(pool)
    }

    fn spawn_instance(&self) -> Result<(), String> {
        let mut command = lambda_command(&self.binary, self.runtime.address(), &self.config);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A panic's message is the one thing worth seeing; nothing else writes here.
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        self.lock_children().push(child);
        Ok(())
    }

    fn lock_children(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `event` to whichever instance polls first. If every instance is busy, one
    /// more is started (up to the ceiling), as Lambda does; the event goes to the first
    /// instance free, which may be the new one once its init is done.
    pub async fn invoke(&self, event: Value) -> Result<Value, String> {
        let busy = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let running = self.lock_children().len();
        if busy > running && running < self.max_instances {
            // Counted before the spawn so that a burst starts one instance per missing
            // one, not one per waiting event.
            let mut scale_outs = self.scale_outs.lock().unwrap_or_else(|p| p.into_inner());
            if self.lock_children().len() == running {
                match self.spawn_instance() {
                    Ok(()) => scale_outs.push(Instant::now()),
                    Err(e) => eprintln!("could not start another {}: {e}", self.name),
                }
            }
        }
        let answer = self.runtime.invoke(event, INVOCATION_LIMIT).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        answer
    }

    /// Instances running now.
    pub fn instances(&self) -> usize {
        self.lock_children().len()
    }

    /// Instances started during the run because all were busy (cold starts).
    pub fn cold_starts(&self) -> usize {
        self.scale_outs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Instances that exited (a crash: a Lambda instance never exits by itself), with
    /// their exit status.
    pub fn exited(&self) -> Vec<String> {
        self.lock_children()
            .iter_mut()
            .filter_map(|child| child.try_wait().ok().flatten())
            .map(|status| status.to_string())
            .collect()
    }
}
