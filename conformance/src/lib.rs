//! A conformance kit for `podprovider.v1` providers: named cases derived from the contract
//! (`proto/podprovider/v1/podprovider.proto`) and `docs/PROTOCOL.md`, run against a provider over
//! gRPC only, so that providers in any language can be checked.
//!
//! [`run`] runs the selected cases in order and returns one [`CaseReport`] per case; the binary
//! prints them and exits non-zero when one failed.
#![forbid(unsafe_code)]

mod cases;
mod connect;
mod provider;

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

pub use cases::{CASES, CaseInfo};
pub use provider::ManagedProvider;

/// Errors that stop the kit before or between cases (a failing case is a [`Outcome::Fail`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not `http://HOST:PORT` or `unix:/PATH`.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// `--case` or `--skip` names a case that does not exist.
    #[error("unknown case {0:?} (see --list)")]
    UnknownCase(String),
    /// `--unimplemented` names something that is not a PodProvider RPC.
    #[error("unknown RPC {0:?} in --unimplemented")]
    UnknownRpc(String),
    /// A command could not be started.
    #[error("cannot run {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The restart command failed.
    #[error("restart command {command:?} failed: {status}")]
    RestartFailed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// The provider did not become reachable.
    #[error("the provider at {endpoint} did not answer within {secs} s{detail}")]
    NotReachable {
        /// Where.
        endpoint: String,
        /// How long the kit waited.
        secs: u64,
        /// The provider's exit status or last output, when the kit started it.
        detail: String,
    },
}

/// Every RPC of `podprovider.v1.PodProvider`.
pub const RPCS: &[&str] = &[
    "GetNodeInfo",
    "Ping",
    "CreatePod",
    "UpdatePod",
    "DeletePod",
    "GetPod",
    "ListPods",
    "WatchPods",
    "GetContainerLogs",
    "Exec",
    "Attach",
    "PortForward",
    "GetStats",
];

/// What to check and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// `http://HOST:PORT` or `unix:/PATH`.
    pub endpoint: String,
    /// The virtual node's name the kit's pods are bound to.
    pub node_name: String,
    /// Started (with `sh -c`) and owned by the kit: its output is searched for the canary secret
    /// and a restart is stop + start.
    pub provider_command: Option<String>,
    /// Restarts a provider the kit did not start (`sh -c`, must return once the restart began).
    pub restart_command: Option<String>,
    /// A file the provider logs to, searched for the canary secret like `provider_command`'s output.
    pub provider_log: Option<PathBuf>,
    /// RPCs the provider declares it does not offer: they must answer UNIMPLEMENTED, and cases
    /// that need them are skipped.
    pub unimplemented: BTreeSet<String>,
    /// Only these cases (empty: all).
    pub cases: Vec<String>,
    /// Not these cases.
    pub skip: Vec<String>,
    /// Image of the kit's pods.
    pub image: String,
    /// How long to wait for a pod to run, an event to arrive, the provider to come up.
    pub timeout: Duration,
}

impl Config {
    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            node_name: "vk-conformance".into(),
            provider_command: None,
            restart_command: None,
            provider_log: None,
            unimplemented: BTreeSet::new(),
            cases: Vec::new(),
            skip: Vec::new(),
            image: "busybox:1.36".into(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider behaves as the contract says.
    Pass,
    /// It does not; why.
    Fail(String),
    /// Not run; why.
    Skip(String),
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Case name.
    pub name: &'static str,
    /// Result.
    pub outcome: Outcome,
    /// Time taken.
    pub elapsed: Duration,
}

impl std::fmt::Display for CaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        match &self.outcome {
            Outcome::Pass => write!(f, "PASS {} ({secs:.1} s)", self.name),
            Outcome::Fail(why) => write!(f, "FAIL {} ({secs:.1} s): {why}", self.name),
            Outcome::Skip(why) => write!(f, "SKIP {}: {why}", self.name),
        }
    }
}

/// All case results of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// In run order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Number of cases with this kind of outcome.
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }

    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Pass)
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }

    /// The outcome of case `name`, if it was part of the run.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.outcome)
    }

    /// The report as JUnit XML (one `testsuite`, one `testcase` per case), for CI dashboards.
    pub fn junit_xml(&self) -> String {
        let time: f64 = self.cases.iter().map(|c| c.elapsed.as_secs_f64()).sum();
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"podprovider-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{time:.3}\">\n",
            self.cases.len(),
            self.failed(),
            self.skipped()
        );
        for c in &self.cases {
            let head = format!(
                "  <testcase classname=\"podprovider-conformance\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(c.name),
                c.elapsed.as_secs_f64()
            );
            match &c.outcome {
                Outcome::Pass => xml.push_str(&format!("{head}/>\n")),
                Outcome::Fail(why) => xml.push_str(&format!(
                    "{head}>\n    <failure message=\"{}\"/>\n  </testcase>\n",
                    xml_escape(why)
                )),
                Outcome::Skip(why) => xml.push_str(&format!(
                    "{head}>\n    <skipped message=\"{}\"/>\n  </testcase>\n",
                    xml_escape(why)
                )),
            }
        }
        xml.push_str("</testsuite>\n");
        xml
    }

    /// `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            // XML 1.0 cannot carry other control characters at all.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Checks the configuration, starts the provider when a command is given, runs the selected cases
/// and calls `on_case` after each (for live output).
pub async fn run(config: Config, on_case: impl FnMut(&CaseReport)) -> Result<Report, Error> {
    let known: BTreeSet<&str> = CASES.iter().map(|c| c.name).collect();
    for name in config.cases.iter().chain(&config.skip) {
        if !known.contains(name.as_str()) {
            return Err(Error::UnknownCase(name.clone()));
        }
    }
    for rpc in &config.unimplemented {
        if !RPCS.contains(&rpc.as_str()) {
            return Err(Error::UnknownRpc(rpc.clone()));
        }
    }
    cases::run_all(config, on_case).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_xml_escapes_and_counts() {
        let report = Report {
            cases: vec![
                CaseReport {
                    name: "health",
                    outcome: Outcome::Pass,
                    elapsed: Duration::from_millis(5),
                },
                CaseReport {
                    name: "exec",
                    outcome: Outcome::Fail("stdout is \"<a & b>\"".into()),
                    elapsed: Duration::from_secs(1),
                },
                CaseReport {
                    name: "restart",
                    outcome: Outcome::Skip("no command".into()),
                    elapsed: Duration::ZERO,
                },
            ],
        };
        let xml = report.junit_xml();
        assert!(
            xml.contains(r#"tests="3" failures="1" skipped="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="stdout is &quot;&lt;a &amp; b&gt;&quot;"/>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<skipped message="no command"/>"#), "{xml}");
        assert_eq!(report.summary(), "1 passed, 1 failed, 1 skipped");
    }
}
