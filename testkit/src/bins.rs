//! Where the Kubernetes binaries are: built once by `scripts/k8s-build.sh` and cached.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The directory with `etcd`, `kube-apiserver`, `kube-scheduler` and `kube-controller-manager`:
/// `$VK_K8S_BIN_DIR`, else `$VK_CACHE/k8s-1.20.2/bin`, else `~/.cache/vk-rs/k8s-1.20.2/bin`.
pub fn k8s_bin_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("VK_K8S_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir().join("k8s-1.20.2/bin"),
    };
    for bin in [
        "etcd",
        "kube-apiserver",
        "kube-scheduler",
        "kube-controller-manager",
    ] {
        if !dir.join(bin).exists() {
            bail!(
                "{} is missing: run scripts/k8s-build.sh once to build the Kubernetes control plane \
                 (or set VK_K8S_BIN_DIR)",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir)
}

/// The project's cache directory outside the checkout: `$VK_CACHE` or `~/.cache/vk-rs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VK_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/vk-rs")
}

/// A binary of this workspace (e.g. `provider-eci`), found next to the running test executable's
/// `deps/` directory, i.e. in the same cargo target profile directory.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dirs: Vec<&Path> = exe.ancestors().skip(1).take(3).collect();
    dirs.retain(|d| d.file_name().is_some_and(|n| n != "deps"));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "binary {name} not found next to {}: build the workspace first (cargo build --workspace)",
        exe.display()
    )
}
