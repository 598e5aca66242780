//! Shared setup of the `fuzz_*` property tests in this crate's modules: 256 cases per property
//! in CI, `PROPTEST_CASES` for long runs (`scripts/fuzz.sh`). Failing cases are saved by proptest
//! under `node-shim/proptest-regressions/` and replayed first on every run.

use proptest::test_runner::Config;

/// Cases per property: `PROPTEST_CASES`, else 256 (what CI runs).
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// The config every `fuzz_*` property runs with.
pub fn config() -> Config {
    Config {
        cases: cases(),
        ..Config::default()
    }
}

/// For properties whose cases carry kilobytes of input: a quarter of the cases, at least 64.
pub fn heavy_config() -> Config {
    Config {
        cases: (cases() / 4).max(64),
        ..config()
    }
}
