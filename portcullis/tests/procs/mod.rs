//! Helpers for tests that drive the real `portcullis` binary: spawn it with a
//! clean environment, capture its output in files, wait (bounded) for the
//! lines it logs at start, and always kill it on drop.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// How long any start-up or exit may take before the test gives up.
pub const WAIT: Duration = Duration::from_secs(30);

/// Environment variables that would change what the binary does; removed from
/// every child so the developer's shell cannot leak into a test.
pub const SCRUBBED_ENV: &[&str] = &[
    "PORTCULLIS_MASTER_KEY",
    "PORTCULLIS_CONFIG",
    "PORTCULLIS_URL",
    "PORTCULLIS_ADMIN_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "RUST_LOG",
    "NO_COLOR",
];

/// A `portcullis` command with a scrubbed environment, run in `cwd`.
pub fn command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for k in SCRUBBED_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a `portcullis` command to completion (bounded); returns (status, stdout, stderr).
pub async fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    run_cmd(command(cwd, args, env)).await
}

/// Runs a prepared command to completion (bounded); returns (status, stdout, stderr).
pub async fn run_cmd(cmd: Command) -> (ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
        .expect("run portcullis");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A long-running child whose stdout and stderr go to files. Killed on drop.
pub struct Proc {
    child: Option<Child>,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `portcullis ARGS` in `cwd`; output is captured under `logs` as `NAME.out` / `NAME.err`.
    pub fn spawn(name: &str, cwd: &Path, logs: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let child = command(cwd, args, env)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn portcullis");
        Proc {
            child: Some(child),
            name: name.to_owned(),
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Both streams, for diagnostics and leak searches.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Waits until `find` returns something for stdout+stderr; panics (with the
    /// output) if the process exits first or nothing shows up within [`WAIT`].
    pub async fn wait_for<T>(&mut self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = format!("{}\n{}", self.stdout(), self.stderr());
            if let Some(v) = find(&text) {
                return v;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited ({status}) before {what}\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {WAIT:?}\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal (`TERM`, `INT`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?}\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then asserts a clean exit (status 0).
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n{}",
            self.name,
            self.output()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("{}", self.output());
            }
        }
    }
}

/// The first `http://…` URL after `marker` in `text`.
pub fn url_after(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)? + marker.len();
    let rest = &text[at..];
    let start = rest.find("http://")?;
    let url: String = rest[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}' && *c != '"')
        .collect();
    // A URL is complete once a character follows it (the line is fully written).
    (rest.len() > start + url.len()).then_some(url)
}

/// A running `portcullis serve` and its URL.
pub struct Gateway {
    pub proc: Proc,
    pub url: String,
}

/// Starts `portcullis serve ARGS` and waits until it logs its address and `/healthz` answers 200.
pub async fn serve(
    name: &str,
    cwd: &Path,
    logs: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Gateway {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut proc = Proc::spawn(name, cwd, logs, &all, env);
    let url = proc
        .wait_for("the listening line", |t| {
            url_after(t, "portcullis listening on ")
        })
        .await;
    wait_healthy(&mut proc, &url).await;
    Gateway { proc, url }
}

/// Polls `GET {url}/healthz` until it answers 200 (bounded).
pub async fn wait_healthy(proc: &mut Proc, url: &str) {
    let http = reqwest::Client::new();
    let health = format!("{url}/healthz");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(&health).send().await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = proc.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!(
                "{} exited ({status}) before /healthz answered\n{}",
                proc.name,
                proc.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{health} never answered 200\n{}",
            proc.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `portcullis mock-provider --listen 127.0.0.1:0 EXTRA`; returns it and its base URL (`…/v1`).
pub async fn mock_provider(logs: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["mock-provider", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn("mock-provider", logs, logs, &args, &[]);
    let base = proc
        .wait_for("the mock's listening line", |t| {
            url_after(t, "mock provider listening on ")
        })
        .await;
    let root = base.trim_end_matches("/v1").to_owned();
    wait_healthy(&mut proc, &root).await;
    (proc, base)
}

/// A gateway config: `listen: 127.0.0.1:0`, SQLite at `db`, one `openai` provider at
/// `base_url` whose key is `${TEST_PROVIDER_KEY}`, and the master key from
/// `${PORTCULLIS_MASTER_KEY}` when `master` is true.
pub fn config_yaml(db: &Path, base_url: &str, models: &str, master: bool) -> String {
    let admin = if master {
        "admin:\n  master_key: ${PORTCULLIS_MASTER_KEY}\n"
    } else {
        ""
    };
    format!(
        "listen: 127.0.0.1:0\ndatabase: sqlite://{db}\n{admin}auth:\n  lockout:\n    enabled: false\nproviders:\n  - name: openai\n    kind: openai\n    base_url: {base_url}\n    api_key: ${{TEST_PROVIDER_KEY}}\n    models: {models}\n",
        db = db.display()
    )
}

/// Creates a client key through the admin API; returns (id, key).
pub async fn create_key(url: &str, master: &str, body: Value) -> (String, String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/admin/keys"))
        .bearer_auth(master)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "create key");
    let v: Value = resp.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_owned())
        .collect()
}
