//! An emulator of Alibaba Cloud's Elastic Container Instance (ECI) OpenAPI, version 2018-08-08,
//! RPC style, written from the cloud's documentation. Test infrastructure only.
//!
//! - [`signature`]: V3 (ACS3-HMAC-SHA256) signing and verification.
//! - [`rpc`]: request parameters and their RPC flattening (`Container.1.Image`, ...).
//! - [`model`]: container groups as stored and as the API shows them.
//! - [`lifecycle`]: Pending → Running → Succeeded/Failed, restart policies, simulated logs.
//! - [`api`]: the actions.
//! - [`exec`]: the exec WebSocket (Kubernetes channel framing) and synchronous exec.
//! - [`admin`]: the unsigned test API under `/_emulator/`.
//! - [`server`]: state, routing, authentication and throttling of each request.

pub mod admin;
pub mod api;
pub mod errors;
pub mod exec;
pub mod lifecycle;
pub mod model;
pub mod rpc;
pub mod server;
pub mod signature;
pub mod sts;

/// The API version the emulator serves.
pub const API_VERSION: &str = "2018-08-08";

/// Run-time configuration (from the command line).
#[derive(Clone, Debug)]
pub struct Config {
    /// The one region served.
    pub region: String,
    /// Long-term AccessKey pair.
    pub access_key_id: String,
    pub access_key_secret: String,
    /// STS AccessKey pair and the security token that must come with it.
    pub sts_access_key_id: String,
    pub sts_access_key_secret: String,
    pub sts_token: String,
    /// Time a new group stays Pending.
    pub start_delay_ms: u64,
    /// Interval of `heartbeat <n>` log lines.
    pub log_heartbeat_ms: u64,
    /// Initial throttling probability.
    pub throttle_rate: f64,
    /// Initial probability that an applied Create/DeleteContainerGroup answers 503 anyway.
    pub lost_answer_rate: f64,
}

/// The only vSwitch the emulator knows.
pub const VSWITCH_ID: &str = "vsw-emulator0001";
/// The zone of [`VSWITCH_ID`].
pub const ZONE_ID: &str = "cn-hangzhou-h";
/// The only security group the emulator knows.
pub const SECURITY_GROUP_ID: &str = "sg-emulator0001";
