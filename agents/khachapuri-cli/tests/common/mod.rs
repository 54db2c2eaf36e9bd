//! What the CLI's tests share: the repository, running the real `khachapuri` binary, and a
//! `khachapuri dev` network in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub struct Dev {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn khachapuri(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_khachapuri"))
        .args(args)
        .current_dir(dir)
        .env_remove("KHACHAPURI_RPC_URL")
        .env_remove("KHACHAPURI_PRIVATE_KEY")
        // As a user runs it: the function projects it builds do not go through make test's lint wrapper.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .output()
        .expect("run khachapuri")
}

pub fn wait_for_dev_json(dev: &mut Dev) -> serde_json::Value {
    let path = dev.dir.path().join(".khachapuri/dev.json");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).expect("dev.json is JSON");
        }
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!("khachapuri dev exited early with {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no dev.json within 180 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `khachapuri dev` in a fresh directory and waits for its dev.json.
pub fn start_dev() -> (Dev, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_khachapuri"))
        .args(["dev", "--root"])
        .arg(repo())
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start khachapuri dev");
    let mut dev = Dev { child, dir };
    let info = wait_for_dev_json(&mut dev);
    (dev, info)
}

/// `khachapuri` with extra environment variables.
pub fn khachapuri_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_khachapuri"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("KHACHAPURI_RPC_URL")
        .env_remove("KHACHAPURI_PRIVATE_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run khachapuri")
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts failure and returns stderr.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `GET url`, read as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    khachapuri_tls::http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
