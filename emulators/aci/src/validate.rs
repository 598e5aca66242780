//! Checks a PUT body the way ACI does, with ACI's error codes and messages where they are
//! documented or seen in the wild (see README.md for the ones that are guessed).

use std::collections::HashSet;

use serde_json::Value;

use crate::model::RestartPolicy;

/// A rejected PUT: ARM error `code` and `message` (status 400).
#[derive(Debug)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: String) -> Invalid {
    Invalid { code, message }
}

/// ARM's deserialization error for a missing required property.
fn missing(property: &str, path: &str) -> Invalid {
    invalid(
        "InvalidRequestContent",
        format!(
            "The request content was invalid and could not be deserialized: 'Required property \
             '{property}' not found in JSON. Path '{path}'.'."
        ),
    )
}

/// ARM's deserialization error for a value outside an enum (its values are matched ignoring
/// case, as ARM's JSON reader does).
fn check_enum(value: &Value, allowed: &[&str], type_name: &str, path: &str) -> Result<(), Invalid> {
    match value.as_str() {
        Some(v) if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) => Ok(()),
        _ => Err(invalid(
            "InvalidRequestContent",
            format!(
                "The request content was invalid and could not be deserialized: 'Error \
                 converting value {value} to type '{type_name}'. Path '{path}'.'."
            ),
        )),
    }
}

/// A required enum: missing is a missing property, else [`check_enum`].
fn required_enum(
    parent: &Value,
    key: &str,
    allowed: &[&str],
    type_name: &str,
    parent_path: &str,
) -> Result<(), Invalid> {
    if parent.get(key).is_none_or(Value::is_null) {
        return Err(missing(key, parent_path));
    }
    check_enum(
        &parent[key],
        allowed,
        type_name,
        &format!("{parent_path}.{key}"),
    )
}

/// An optional enum: checked when present.
fn optional_enum(
    parent: &Value,
    key: &str,
    allowed: &[&str],
    type_name: &str,
    parent_path: &str,
) -> Result<(), Invalid> {
    if parent.get(key).is_none_or(Value::is_null) {
        return Ok(());
    }
    check_enum(
        &parent[key],
        allowed,
        type_name,
        &format!("{parent_path}.{key}"),
    )
}

/// `environmentVariables`: `name` required, and exactly one of `value` and `secureValue` (an
/// empty string counts as none: a guess, see README.md).
fn check_env(c: &Value, cname: &str, group: &str, ppath: &str) -> Result<(), Invalid> {
    for (i, v) in c["environmentVariables"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(name) = v["name"].as_str() else {
            return Err(missing(
                "name",
                &format!("{ppath}.environmentVariables[{i}]"),
            ));
        };
        let given = |k: &str| v[k].as_str().is_some_and(|s| !s.is_empty());
        if given("value") == given("secureValue") {
            return Err(invalid(
                "InvalidEnvironmentVariable",
                format!(
                    "The environment variable '{name}' in container '{cname}' of container group \
                     '{group}' is invalid. One and only one property of 'value' and \
                     'secureValue' can be specified in an environment variable."
                ),
            ));
        }
    }
    Ok(())
}

/// `securityContext` (SecurityContextDefinition): `privileged` and `allowPrivilegeEscalation`
/// booleans, `runAsUser`/`runAsGroup` int32, `capabilities.add`/`drop` string arrays,
/// `seccompProfile` a string (a base64-encoded profile).
fn check_security_context(c: &Value, ppath: &str) -> Result<(), Invalid> {
    let sc = &c["securityContext"];
    if sc.is_null() {
        return Ok(());
    }
    let path = format!("{ppath}.securityContext");
    let wrong = |key: &str, type_name: &str| {
        invalid(
            "InvalidRequestContent",
            format!(
                "The request content was invalid and could not be deserialized: 'Error \
                 converting value {} to type '{type_name}'. Path '{path}.{key}'.'.",
                sc[key]
            ),
        )
    };
    for key in ["privileged", "allowPrivilegeEscalation"] {
        if !sc[key].is_null() && !sc[key].is_boolean() {
            return Err(wrong(key, "System.Boolean"));
        }
    }
    for key in ["runAsUser", "runAsGroup"] {
        if !sc[key].is_null()
            && sc[key]
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .is_none()
        {
            return Err(wrong(key, "System.Int32"));
        }
    }
    if !sc["seccompProfile"].is_null() && !sc["seccompProfile"].is_string() {
        return Err(wrong("seccompProfile", "System.String"));
    }
    for key in ["add", "drop"] {
        let list = &sc["capabilities"][key];
        if !list.is_null()
            && !list
                .as_array()
                .is_some_and(|l| l.iter().all(Value::is_string))
        {
            return Err(invalid(
                "InvalidRequestContent",
                format!(
                    "The request content was invalid and could not be deserialized: 'Error \
                     converting value {list} to type 'System.Collections.Generic.IList`1[System.String]'. \
                     Path '{path}.capabilities.{key}'.'."
                ),
            ));
        }
    }
    Ok(())
}

/// Ports of a container or of the IP address: `port` required, `protocol` TCP or UDP.
fn check_ports(ports: &Value, type_name: &str, path: &str) -> Result<(), Invalid> {
    for (i, p) in ports.as_array().into_iter().flatten().enumerate() {
        let ppath = format!("{path}[{i}]");
        if !p["port"].is_i64() {
            return Err(missing("port", &ppath));
        }
        optional_enum(p, "protocol", &["TCP", "UDP"], type_name, &ppath)?;
    }
    Ok(())
}

/// Container group and container names: 1-63 chars of `[a-z0-9-]`, not starting or ending
/// with '-'.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn check_group_name(name: &str) -> Result<(), Invalid> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(invalid(
            "InvalidContainerGroupName",
            format!(
                "The container group name '{name}' is invalid. A container group name must \
                 contain no more than 63 characters and must match the regex \
                 '[a-z0-9]([-a-z0-9]*[a-z0-9])?' (e.g. 'my-name')."
            ),
        ))
    }
}

/// Numbers as ACI prints them: `1.5`, `2`.
fn num(v: f64) -> String {
    format!("{v}")
}

struct Requests {
    cpu: f64,
    memory: f64,
}

pub fn check_group(name: &str, body: &Value) -> Result<(), Invalid> {
    check_group_name(name)?;
    let Some(obj) = body.as_object() else {
        return Err(invalid(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'The request body \
             must be a JSON object.'."
                .to_owned(),
        ));
    };
    let Some(props) = obj.get("properties").filter(|p| p.is_object()) else {
        return Err(missing("properties", ""));
    };
    let Some(containers) = props["containers"].as_array() else {
        return Err(missing("containers", "properties"));
    };
    if containers.is_empty() {
        return Err(invalid(
            "NoContainersInContainerGroup",
            format!("The container group '{name}' must contain at least one container."),
        ));
    }
    if RestartPolicy::parse(props["restartPolicy"].as_str()).is_none() {
        return Err(invalid(
            "InvalidRequestContent",
            format!(
                "The request content was invalid and could not be deserialized: 'Error \
                 converting value \"{}\" to type 'ContainerGroupRestartPolicy'. Path \
                 'properties.restartPolicy'.'.",
                props["restartPolicy"].as_str().unwrap_or_default()
            ),
        ));
    }
    // ContainerGroupPropertiesProperties requires `osType` (2023-05-01).
    required_enum(
        props,
        "osType",
        &["Windows", "Linux"],
        "OperatingSystemTypes",
        "properties",
    )?;
    optional_enum(
        props,
        "sku",
        &["Standard", "Dedicated", "Confidential"],
        "ContainerGroupSku",
        "properties",
    )?;
    let inits = props["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let volumes: HashSet<&str> = props["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut names = HashSet::new();
    let mut requests = Vec::new();
    for (kind, list, is_init) in [
        ("initContainers", &inits, true),
        ("containers", containers, false),
    ] {
        for (i, c) in list.iter().enumerate() {
            let path = format!("properties.{kind}[{i}]");
            let Some(cname) = c["name"].as_str() else {
                return Err(missing("name", &path));
            };
            if !valid_name(cname) {
                return Err(invalid(
                    "InvalidContainerName",
                    format!(
                        "The container name '{cname}' in container group '{name}' is invalid. A \
                         container name must contain no more than 63 characters and must match \
                         the regex '[a-z0-9]([-a-z0-9]*[a-z0-9])?' (e.g. 'my-name')."
                    ),
                ));
            }
            if !names.insert(cname.to_owned()) {
                return Err(invalid(
                    "DuplicateContainerName",
                    format!(
                        "The container name '{cname}' is used more than once in container group \
                         '{name}'. Container names must be unique."
                    ),
                ));
            }
            let cprops = &c["properties"];
            if !cprops.is_object() {
                return Err(missing("properties", &path));
            }
            let ppath = format!("{path}.properties");
            match cprops["image"].as_str() {
                None => return Err(missing("image", &ppath)),
                Some(img) if img.trim().is_empty() => {
                    return Err(invalid(
                        "InvalidContainerImage",
                        format!(
                            "The image of container '{cname}' in container group '{name}' must \
                             not be empty."
                        ),
                    ));
                }
                Some(_) => {}
            }
            check_env(cprops, cname, name, &ppath)?;
            check_security_context(cprops, &ppath)?;
            for (j, v) in cprops["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let vname = v["name"].as_str().unwrap_or_default();
                if v["mountPath"].as_str().is_none() {
                    return Err(missing("mountPath", &format!("{ppath}.volumeMounts[{j}]")));
                }
                if !volumes.contains(vname) {
                    return Err(invalid(
                        "InvalidVolumeMount",
                        format!(
                            "The volume mount '{vname}' of container '{cname}' in container \
                             group '{name}' does not match any volume of the container group."
                        ),
                    ));
                }
            }
            if !is_init {
                check_ports(
                    &cprops["ports"],
                    "ContainerNetworkProtocol",
                    &format!("{ppath}.ports"),
                )?;
                for probe in ["livenessProbe", "readinessProbe"] {
                    let get = &cprops[probe]["httpGet"];
                    if get.is_object() {
                        let gpath = format!("{ppath}.{probe}.httpGet");
                        if !get["port"].is_i64() {
                            return Err(missing("port", &gpath));
                        }
                        optional_enum(get, "scheme", &["http", "https"], "Scheme", &gpath)?;
                    }
                }
                let res = &cprops["resources"];
                if !res.is_object() {
                    return Err(missing("resources", &ppath));
                }
                let req = &res["requests"];
                if !req.is_object() {
                    return Err(missing("requests", &format!("{ppath}.resources")));
                }
                let rpath = format!("{ppath}.resources.requests");
                let Some(cpu) = req["cpu"].as_f64() else {
                    return Err(missing("cpu", &rpath));
                };
                let Some(memory) = req["memoryInGB"].as_f64() else {
                    return Err(missing("memoryInGB", &rpath));
                };
                for (kind, gpu) in [("requests", &req["gpu"]), ("limits", &res["limits"]["gpu"])] {
                    if gpu.is_object() {
                        let gpath = format!("{ppath}.resources.{kind}.gpu");
                        if !gpu["count"].is_i64() {
                            return Err(missing("count", &gpath));
                        }
                        required_enum(gpu, "sku", &["K80", "P100", "V100"], "GpuSku", &gpath)?;
                    }
                }
                if cpu <= 0.0 || memory <= 0.0 {
                    return Err(invalid(
                        "InvalidContainerResourceRequests",
                        format!(
                            "The resource requests of container '{cname}' in container group \
                             '{name}' are invalid: cpu and memoryInGB must be greater than 0."
                        ),
                    ));
                }
                requests.push((cname.to_owned(), Requests { cpu, memory }, res.clone()));
            }
        }
    }
    // Limits are capped by the group's total request (ACI, unlike Kubernetes, has no
    // node to burst into).
    let total_cpu: f64 = requests.iter().map(|(_, r, _)| r.cpu).sum();
    let total_mem: f64 = requests.iter().map(|(_, r, _)| r.memory).sum();
    for (cname, _, res) in &requests {
        for (key, label, total) in [
            ("cpu", "Cpu", total_cpu),
            ("memoryInGB", "MemoryInGB", total_mem),
        ] {
            if let Some(limit) = res["limits"][key].as_f64()
                && limit > total + 1e-9
            {
                return Err(invalid(
                    "ContainerLimitGreaterThanContainerGroupTotalRequest",
                    format!(
                        "The '{label}' limit '{}' in container '{cname}' is greater than the total \
                         request '{}' of container group '{name}'.",
                        num(limit),
                        num(total)
                    ),
                ));
            }
        }
    }
    if let Some(ip) = props.get("ipAddress").filter(|v| v.is_object()) {
        // IpAddress requires `ports` and `type` (2023-05-01).
        required_enum(
            ip,
            "type",
            &["Public", "Private"],
            "ContainerGroupIpAddressType",
            "properties.ipAddress",
        )?;
        check_ports(
            &ip["ports"],
            "ContainerGroupNetworkProtocol",
            "properties.ipAddress.ports",
        )?;
        let in_vnet = props["subnetIds"].as_array().is_some_and(|s| !s.is_empty())
            || props["networkProfile"].is_object();
        if ip["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("Private"))
            && !in_vnet
        {
            return Err(invalid(
                "PrivateIPAddressNotSupported",
                format!(
                    "IP Address type in container group '{name}' is invalid. Private IP address is \
                     only supported when network profile is defined."
                ),
            ));
        }
        let ports: Vec<i64> = ip["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        if ports.is_empty() {
            return Err(invalid(
                "MissingIpAddressPorts",
                format!(
                    "The ports in the 'ipAddress' of container group '{name}' cannot be empty."
                ),
            ));
        }
        let exposed: HashSet<i64> = containers
            .iter()
            .flat_map(|c| {
                c["properties"]["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p["port"].as_i64())
            .collect();
        if let Some(p) = ports.iter().find(|p| !exposed.contains(p)) {
            return Err(invalid(
                "InvalidIpAddressPorts",
                format!(
                    "The port '{p}' in the 'ipAddress' of container group '{name}' is not exposed \
                     by any container of the group. Ports of the IP address must be exposed by a \
                     container."
                ),
            ));
        }
    }
    Ok(())
}
