//! A stored container group: the body the client PUT, plus the simulated run of its containers,
//! and its rendering as ARM returns it (secrets removed, instance view added).

use std::time::Instant;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::state::{Config, rfc3339};

/// `properties.restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// ACI's default is `Always`.
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            None | Some("Always") => Some(Self::Always),
            Some("OnFailure") => Some(Self::OnFailure),
            Some("Never") => Some(Self::Never),
            Some(_) => None,
        }
    }
}

pub enum Provisioning {
    Creating {
        ready_at: Instant,
    },
    Succeeded,
    /// A terminal failure set through the admin API (`Failed`, `Canceled`, ...): nothing runs.
    Faulted(String),
}

/// A group-level `instanceView.events` entry (set through the admin API's fault).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct GroupEvent {
    pub name: String,
    #[serde(rename = "type", default = "normal")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

fn normal() -> String {
    "Normal".to_owned()
}

#[derive(Clone, Debug)]
pub enum RunState {
    Waiting,
    Running {
        start: OffsetDateTime,
    },
    Terminated {
        start: OffsetDateTime,
        finish: OffsetDateTime,
        exit_code: i32,
    },
}

pub struct Event {
    pub name: String,
    /// `Normal` or `Warning`.
    pub kind: String,
    pub message: String,
    pub count: u32,
    pub first: OffsetDateTime,
    pub last: OffsetDateTime,
}

pub struct LogLine {
    pub at: OffsetDateTime,
    pub text: String,
}

/// One container (or init container) and its simulated process.
pub struct ContainerRun {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub init: bool,
    /// `value` and `secureValue` variables: given to exec processes, never logged or returned.
    pub env: Vec<(String, String)>,
    pub state: RunState,
    pub previous: Option<RunState>,
    pub restart_count: u32,
    pub events: Vec<Event>,
    /// Output of the current run.
    pub logs: Vec<LogLine>,
    pub heartbeats: u64,
    pub next_heartbeat: Option<Instant>,
    /// Held `Waiting` (through the admin API) with this `detailStatus` until `held_until`.
    pub waiting_detail: Option<String>,
    pub held_until: Option<Instant>,
}

impl ContainerRun {
    fn from_spec(c: &Value, init: bool) -> Self {
        let props = &c["properties"];
        let env = props["environmentVariables"]
            .as_array()
            .map(|vars| {
                vars.iter()
                    .filter_map(|v| {
                        let name = v["name"].as_str()?;
                        let value = v["value"]
                            .as_str()
                            .or_else(|| v["secureValue"].as_str())
                            .unwrap_or_default();
                        Some((name.to_owned(), value.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            name: c["name"].as_str().unwrap_or_default().to_owned(),
            image: props["image"].as_str().unwrap_or_default().to_owned(),
            command: props["command"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            init,
            env,
            state: RunState::Waiting,
            previous: None,
            restart_count: 0,
            events: Vec::new(),
            logs: Vec::new(),
            heartbeats: 0,
            next_heartbeat: None,
            waiting_detail: None,
            held_until: None,
        }
    }

    /// Counts a `Normal` event like ACI does: same name and message bump `count` and
    /// `lastTimestamp`.
    pub fn record_event(&mut self, name: &str, message: String, now: OffsetDateTime) {
        self.record_typed_event(name, "Normal", message, now);
    }

    /// [`ContainerRun::record_event`] with a type (`Normal`, `Warning`).
    pub fn record_typed_event(
        &mut self,
        name: &str,
        kind: &str,
        message: String,
        now: OffsetDateTime,
    ) {
        if let Some(e) = self
            .events
            .iter_mut()
            .find(|e| e.name == name && e.message == message)
        {
            e.count += 1;
            e.last = now;
        } else {
            self.events.push(Event {
                name: name.to_owned(),
                kind: kind.to_owned(),
                message,
                count: 1,
                first: now,
                last: now,
            });
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    fn instance_view(&self) -> Value {
        let mut view = json!({
            "restartCount": self.restart_count,
            "currentState": match (&self.state, &self.waiting_detail) {
                (RunState::Waiting, Some(detail)) => {
                    json!({"state": "Waiting", "detailStatus": detail})
                }
                (state, _) => state_json(state),
            },
            "events": self.events.iter().map(|e| json!({
                "count": e.count,
                "firstTimestamp": rfc3339(e.first),
                "lastTimestamp": rfc3339(e.last),
                "message": e.message,
                "name": e.name,
                "type": e.kind,
            })).collect::<Vec<_>>(),
        });
        if let Some(prev) = &self.previous {
            view["previousState"] = state_json(prev);
        }
        view
    }
}

/// `ContainerState` of the REST reference.
fn state_json(s: &RunState) -> Value {
    match s {
        RunState::Waiting => json!({"state": "Waiting", "detailStatus": ""}),
        RunState::Running { start } => {
            json!({"state": "Running", "startTime": rfc3339(*start), "detailStatus": ""})
        }
        RunState::Terminated {
            start,
            finish,
            exit_code,
        } => json!({
            "state": "Terminated",
            "startTime": rfc3339(*start),
            "finishTime": rfc3339(*finish),
            "exitCode": exit_code,
            "detailStatus": if *exit_code == 0 { "Completed" } else { "Error" },
        }),
    }
}

pub struct Group {
    pub name: String,
    /// Exactly the body the client PUT (secrets included): what `/_emulator/groups/{name}` returns.
    pub spec: Value,
    pub provisioning: Provisioning,
    pub restart_policy: RestartPolicy,
    /// Set by the `stop` action: containers are killed and nothing restarts.
    pub stopped: bool,
    /// Group-level events (`instanceView.events`), with when they were recorded.
    pub events: Vec<(GroupEvent, OffsetDateTime)>,
    /// Init containers first, in order, then the containers.
    pub containers: Vec<ContainerRun>,
    /// Working directory of exec processes; removed with the group.
    pub workdir: tempfile::TempDir,
    pub ip: String,
    /// `identity.principalId` of a system-assigned identity: fixed for the group's life, as
    /// ARM's is.
    pub principal_id: String,
    /// An asynchronous DELETE under way: the group is `Deleting` until then.
    pub deleting_until: Option<Instant>,
}

impl Group {
    /// A new group from a validated spec; provisioning ends after the configured delay.
    pub fn new(name: &str, spec: Value, cfg: &Config) -> std::io::Result<Self> {
        let props = &spec["properties"];
        let mut containers = Vec::new();
        for c in props["initContainers"].as_array().into_iter().flatten() {
            containers.push(ContainerRun::from_spec(c, true));
        }
        for c in props["containers"].as_array().into_iter().flatten() {
            containers.push(ContainerRun::from_spec(c, false));
        }
        let workdir = tempfile::Builder::new()
            .prefix(&format!("aci-emulator-{name}-"))
            .tempdir()?;
        let ip = ip_for(props["ipAddress"]["type"].as_str());
        Ok(Self {
            name: name.to_owned(),
            restart_policy: RestartPolicy::parse(props["restartPolicy"].as_str())
                .unwrap_or(RestartPolicy::Always),
            spec,
            provisioning: Provisioning::Creating {
                ready_at: Instant::now() + cfg.provisioning_delay,
            },
            stopped: false,
            events: Vec::new(),
            containers,
            workdir,
            ip,
            principal_id: uuid::Uuid::new_v4().to_string(),
            deleting_until: None,
        })
    }

    pub fn container(&self, name: &str) -> Option<&ContainerRun> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRun> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    pub fn provisioning_state(&self) -> &str {
        if self.deleting_until.is_some() {
            return "Deleting";
        }
        match &self.provisioning {
            Provisioning::Creating { .. } => "Creating",
            Provisioning::Succeeded => "Succeeded",
            Provisioning::Faulted(state) => state,
        }
    }

    /// Puts the group in the terminal provisioning `state` with group-level `events`, as the
    /// REST reference's ContainerGroupsGet_Failed shows one: instance view `Pending`, containers
    /// `Waiting` (a run in progress is gone), their events kept.
    pub fn fault(&mut self, state: String, events: Vec<GroupEvent>) {
        let now = OffsetDateTime::now_utc();
        self.provisioning = Provisioning::Faulted(state);
        self.events = events.into_iter().map(|e| (e, now)).collect();
        for c in &mut self.containers {
            c.state = RunState::Waiting;
            c.next_heartbeat = None;
        }
    }

    /// `properties.instanceView.state`: Pending until the containers run, Running while any runs
    /// or will restart, then Succeeded/Failed by exit codes; Stopped after a stop.
    pub fn instance_state(&self) -> &'static str {
        if self.stopped {
            return "Stopped";
        }
        let main: Vec<&ContainerRun> = self.containers.iter().filter(|c| !c.init).collect();
        if matches!(
            self.provisioning,
            Provisioning::Creating { .. } | Provisioning::Faulted(_)
        ) || main.iter().any(|c| matches!(c.state, RunState::Waiting))
        {
            return "Pending";
        }
        if main.iter().any(|c| c.is_running()) {
            return "Running";
        }
        let failed = main
            .iter()
            .any(|c| matches!(c.state, RunState::Terminated { exit_code, .. } if exit_code != 0));
        if failed { "Failed" } else { "Succeeded" }
    }

    /// The group as ARM returns it in a list: like [`Group::view`] without the group's and the
    /// (init) containers' `instanceView`, which real ARM only returns from GET (see README.md).
    pub fn list_view(&self, cfg: &Config) -> Value {
        let mut body = self.view(cfg);
        if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
            props.remove("instanceView");
            for key in ["initContainers", "containers"] {
                for c in props
                    .get_mut(key)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(cprops) = c.get_mut("properties").and_then(Value::as_object_mut) {
                        cprops.remove("instanceView");
                    }
                }
            }
        }
        body
    }

    /// The group as ARM returns it from PUT/GET/DELETE (with instance views).
    pub fn view(&self, cfg: &Config) -> Value {
        let mut body = self.spec.clone();
        let Some(obj) = body.as_object_mut() else {
            return body;
        };
        obj.insert(
            "id".into(),
            json!(format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups/{}",
                cfg.subscription_id, cfg.resource_group, self.name
            )),
        );
        obj.insert("name".into(), json!(self.name));
        obj.insert(
            "type".into(),
            json!("Microsoft.ContainerInstance/containerGroups"),
        );
        if !obj.get("location").is_some_and(Value::is_string) {
            obj.insert("location".into(), json!(cfg.location));
        }
        let location = obj
            .get("location")
            .and_then(Value::as_str)
            .unwrap_or(&cfg.location)
            .to_owned();
        if let Some(Value::Object(identity)) = obj.get_mut("identity") {
            // ARM fills in the identity's ids; they are not secret.
            if identity
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("SystemAssigned"))
            {
                identity.insert("principalId".into(), json!(self.principal_id));
                identity.insert("tenantId".into(), json!(cfg.tenant_id));
            }
        }
        let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) else {
            return body;
        };
        props.insert("provisioningState".into(), json!(self.provisioning_state()));
        if !props.contains_key("osType") {
            props.insert("osType".into(), json!("Linux"));
        }
        if !props.contains_key("restartPolicy") {
            props.insert("restartPolicy".into(), json!("Always"));
        }
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|(e, at)| {
                json!({
                    "name": e.name,
                    "type": e.kind,
                    "count": 1,
                    "firstTimestamp": rfc3339(*at),
                    "lastTimestamp": rfc3339(*at),
                    "message": e.message,
                })
            })
            .collect();
        props.insert(
            "instanceView".into(),
            json!({"state": self.instance_state(), "events": events}),
        );
        for (key, init) in [("initContainers", true), ("containers", false)] {
            if let Some(Value::Array(list)) = props.get_mut(key) {
                for c in list {
                    let name = c["name"].as_str().unwrap_or_default().to_owned();
                    let Some(cprops) = c.get_mut("properties").and_then(Value::as_object_mut)
                    else {
                        continue;
                    };
                    hide_secure_values(cprops);
                    if let Some(run) = self
                        .containers
                        .iter()
                        .find(|r| r.init == init && r.name == name)
                    {
                        cprops.insert("instanceView".into(), run.instance_view());
                    }
                }
            }
        }
        if let Some(Value::Object(ip)) = props.get_mut("ipAddress") {
            ip.insert("ip".into(), json!(self.ip));
            if let Some(label) = ip.get("dnsNameLabel").and_then(Value::as_str) {
                let fqdn = format!("{label}.{}.azurecontainer.io", fqdn_region(&location));
                ip.insert("fqdn".into(), json!(fqdn));
            }
        }
        hide_group_secrets(props);
        body
    }
}

/// The address of a group's `ipAddress`: Private ones come from the VNet's space (10.0.0.0/16
/// here), Public ones from a public range (20.0.0.0/8, an Azure range), so tests can tell them
/// apart.
fn ip_for(kind: Option<&str>) -> String {
    let host = 1 + rand::random::<u8>() % 254;
    if kind.is_some_and(|k| k.eq_ignore_ascii_case("Private")) {
        format!("10.0.{}.{host}", rand::random::<u8>())
    } else {
        format!(
            "20.{}.{}.{host}",
            rand::random::<u8>(),
            rand::random::<u8>()
        )
    }
}

/// The region in an FQDN (`<label>.<region>.azurecontainer.io`): the group's location as a
/// region name, e.g. "West US" becomes `westus`.
fn fqdn_region(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// ACI never returns `secureValue`s: the variable is listed by name only.
fn hide_secure_values(cprops: &mut Map<String, Value>) {
    if let Some(Value::Array(vars)) = cprops.get_mut("environmentVariables") {
        for v in vars {
            if let Some(o) = v.as_object_mut() {
                o.remove("secureValue");
            }
        }
    }
}

/// Other write-only fields, as the documented example responses omit them.
fn hide_group_secrets(props: &mut Map<String, Value>) {
    if let Some(Value::Array(creds)) = props.get_mut("imageRegistryCredentials") {
        for c in creds {
            if let Some(o) = c.as_object_mut() {
                o.remove("password");
            }
        }
    }
    if let Some(Value::Array(vols)) = props.get_mut("volumes") {
        for v in vols {
            if let Some(o) = v.as_object_mut() {
                if o.contains_key("secret") {
                    o.insert("secret".into(), json!({}));
                }
                if let Some(Value::Object(af)) = o.get_mut("azureFile") {
                    af.remove("storageAccountKey");
                }
            }
        }
    }
    if let Some(Value::Object(diag)) = props.get_mut("diagnostics")
        && let Some(Value::Object(la)) = diag.get_mut("logAnalytics")
    {
        la.remove("workspaceKey");
    }
}
