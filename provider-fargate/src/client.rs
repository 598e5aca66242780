//! The ECS, Secrets Manager, CloudWatch Logs and CloudWatch calls this provider makes, each
//! retried with backoff.

use std::collections::HashMap;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility,
    ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride,
    ContainerRestartPolicy, CpuArchitecture, DesiredStatus, EphemeralStorage, HealthCheck,
    KernelCapabilities, KeyValuePair, LaunchType, LinuxParameters, LogConfiguration, LogDriver,
    MountPoint, NetworkConfiguration, NetworkMode, OsFamily, PortMapping, RepositoryCredentials,
    RuntimePlatform, Secret, SystemControl, Tag, Task, TaskDefinitionFamilyStatus,
    TaskDefinitionStatus, TaskField, TaskOverride, TransportProtocol, Volume,
};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use provider_common::{
    naming,
    retry::{RetryPolicy, retry},
};

use crate::{
    error::{self, AwsError, Kind},
    plan::{FARGATE_SPOT, FILES_CONTAINER, TaskDefSpec},
    stats,
    status::Shape,
};

/// Network settings of every task.
#[derive(Clone, Debug)]
pub struct Network {
    /// Subnets.
    pub subnets: Vec<String>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// Assign a public IP.
    pub assign_public_ip: bool,
}

/// ECS and CloudWatch Logs clients for one cluster.
#[derive(Clone, Debug)]
pub struct Cloud {
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Secrets Manager (the pods' sensitive values).
    pub secrets: aws_sdk_secretsmanager::Client,
    /// CloudWatch (Container Insights usage figures).
    pub metrics: aws_sdk_cloudwatch::Client,
    /// Cluster name or ARN.
    pub cluster: String,
    /// Retry policy for every call.
    pub policy: RetryPolicy,
}

/// What RunTask needs besides the definition.
pub struct RunSpec<'a> {
    /// Task definition ARN.
    pub task_definition: &'a str,
    /// `startedBy`: the pod's deterministic name.
    pub started_by: &'a str,
    /// Idempotency token.
    pub client_token: &'a str,
    /// Tags (identity and bookkeeping).
    pub tags: &'a [(String, String)],
    /// Per container environment; may hold secrets.
    pub overrides: &'a [(String, Vec<(String, String)>)],
    /// Network.
    pub network: &'a Network,
    /// Platform version.
    pub platform_version: Option<&'a str>,
    /// ECS Exec.
    pub enable_execute_command: bool,
    /// This installation's identity: only its tasks count as found.
    pub installation: &'a str,
    /// `overrides.taskRoleArn`: the pod's own task role.
    pub task_role_arn: Option<&'a str>,
    /// Fargate Spot (capacity provider strategy) instead of launch type FARGATE.
    pub spot: bool,
}

/// The tag with the installation that owns a task, task definition or secret.
pub const TAG_INSTALLATION: &str = "vk-installation";

/// Marker at the start of the `reason` this provider gives StopTask: a stopped task with it was
/// deleted on purpose, and a restarted provider does not report it again.
pub const STOP_REASON: &str = "virtual-kubelet: pod deleted";

/// Tag put on a task whose pod was deleted: a task that had stopped by itself keeps its own
/// `stoppedReason`, so this tells a restarted provider not to report its pod again.
pub const TAG_DELETED: &str = "vk-deleted";

fn sdk<E>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_ecs::error::SdkError<E, aws_sdk_ecs::config::http::HttpResponse>) -> AwsError
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    move |e| crate::error::from_sdk(op, e)
}

/// A secret of ours, as ListSecrets shows it.
#[derive(Clone, Debug)]
pub struct OurSecret {
    /// Name.
    pub name: String,
    /// The pod's UID (tag).
    pub pod_uid: String,
}

impl Cloud {
    /// The ARNs of the tasks started for `started_by` that ECS still lists with the default
    /// desired status (RUNNING). The ECS API reference on `startedBy`: "When you specify startedBy
    /// as the filter, it must be the only filter that you use", so no `desiredStatus` here.
    async fn started_for(&self, started_by: &str) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ecs
                .list_tasks()
                .cluster(&self.cluster)
                .started_by(started_by)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(sdk("ListTasks"))?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The first not-stopped task of `arns` tagged with `installation` (described with tags).
    async fn ours_of(&self, arns: &[String], installation: &str) -> Result<Option<Task>, AwsError> {
        if arns.is_empty() {
            return Ok(None);
        }
        let out = self
            .ecs
            .describe_tasks()
            .cluster(&self.cluster)
            .set_tasks(Some(arns.iter().take(100).cloned().collect()))
            .include(TaskField::Tags)
            .send()
            .await
            .map_err(sdk("DescribeTasks"))?;
        Ok(out
            .tasks()
            .iter()
            .find(|t| {
                t.last_status() != Some("STOPPED")
                    && t.tags().iter().any(|tag| {
                        tag.key() == Some(TAG_INSTALLATION) && tag.value() == Some(installation)
                    })
            })
            .cloned())
    }

    /// The task of this installation (not yet stopped) started for `started_by`, if any.
    pub async fn find_task(
        &self,
        started_by: &str,
        installation: &str,
    ) -> Result<Option<String>, AwsError> {
        retry(&self.policy, "ListTasks", || async {
            let arns = self.started_for(started_by).await?;
            Ok(self
                .ours_of(&arns, installation)
                .await?
                .and_then(|t| t.task_arn().map(str::to_owned)))
        })
        .await
    }

    /// Every task of the cluster that is meant to run (all pages).
    pub async fn list_running(&self) -> Result<Vec<String>, AwsError> {
        self.list_desired(DesiredStatus::Running).await
    }

    /// Every task of the cluster that is stopped or stopping: ECS lists stopped tasks for a while
    /// after they stop (at least an hour), so a restarted provider finds its finished pods.
    pub async fn list_stopped(&self) -> Result<Vec<String>, AwsError> {
        self.list_desired(DesiredStatus::Stopped).await
    }

    /// Every task of the cluster with desired status `desired` (all pages).
    async fn list_desired(&self, desired: DesiredStatus) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retry(&self.policy, "ListTasks", || async {
                self.ecs
                    .list_tasks()
                    .cluster(&self.cluster)
                    .desired_status(desired.clone())
                    .set_next_token(token.clone())
                    .max_results(100)
                    .send()
                    .await
                    .map_err(sdk("ListTasks"))
            })
            .await?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// Describes tasks with their tags, 100 per call; also returns the ARNs ECS reports MISSING.
    pub async fn describe(&self, arns: &[String]) -> Result<(Vec<Task>, Vec<String>), AwsError> {
        let mut tasks = Vec::new();
        let mut missing = Vec::new();
        for chunk in arns.chunks(100) {
            let out = retry(&self.policy, "DescribeTasks", || async {
                self.ecs
                    .describe_tasks()
                    .cluster(&self.cluster)
                    .set_tasks(Some(chunk.to_vec()))
                    .include(TaskField::Tags)
                    .send()
                    .await
                    .map_err(sdk("DescribeTasks"))
            })
            .await?;
            tasks.extend(out.tasks().iter().cloned());
            missing.extend(
                out.failures()
                    .iter()
                    .filter(|f| f.reason() == Some("MISSING"))
                    .filter_map(|f| f.arn().map(str::to_owned)),
            );
        }
        Ok((tasks, missing))
    }

    /// The ACTIVE definition of `spec`'s family, registering it when there is none.
    pub async fn ensure_definition(
        &self,
        spec: &TaskDefSpec,
        tags: &[(String, String)],
    ) -> Result<String, AwsError> {
        let family = spec.family();
        let existing = retry(&self.policy, "DescribeTaskDefinition", || async {
            match self
                .ecs
                .describe_task_definition()
                .task_definition(&family)
                .send()
                .await
                .map_err(sdk("DescribeTaskDefinition"))
            {
                Ok(out) => Ok(out.task_definition().cloned()),
                // An unknown family is a ClientException.
                Err(e) if matches!(e.kind, Kind::Invalid | Kind::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        if let Some(def) = existing
            && def.status() == Some(&TaskDefinitionStatus::Active)
            && let Some(arn) = def.task_definition_arn()
        {
            return Ok(arn.to_owned());
        }
        let out = retry(&self.policy, "RegisterTaskDefinition", || async {
            register_request(&self.ecs, spec, &family, tags)
                .send()
                .await
                .map_err(sdk("RegisterTaskDefinition"))
        })
        .await?;
        out.task_definition()
            .and_then(|d| d.task_definition_arn())
            .map(str::to_owned)
            .ok_or_else(|| {
                other(
                    "RegisterTaskDefinition",
                    "no task definition ARN in the answer",
                )
            })
    }

    /// The containers of a task definition in spec order.
    pub async fn shape(&self, task_definition: &str) -> Result<Shape, AwsError> {
        let out = retry(&self.policy, "DescribeTaskDefinition", || async {
            self.ecs
                .describe_task_definition()
                .task_definition(task_definition)
                .send()
                .await
                .map_err(sdk("DescribeTaskDefinition"))
        })
        .await?;
        let mut shape = Shape::default();
        for c in out
            .task_definition()
            .map(|d| d.container_definitions())
            .unwrap_or_default()
        {
            let name = c.name().unwrap_or_default().to_owned();
            let image = c.image().unwrap_or_default().to_owned();
            if name == FILES_CONTAINER {
                continue;
            }
            if c.health_check().is_some() {
                shape.health_checked.push(name.clone());
            }
            if c.essential().unwrap_or(true) {
                shape.app.push((name, image));
            } else {
                shape.init.push((name, image));
            }
        }
        Ok(shape)
    }

    /// ACTIVE task definitions of the families starting with `prefix` (this installation's),
    /// every page of both listings (a page may be short, even empty, before the last).
    pub async fn our_definitions(&self, prefix: &str) -> Result<Vec<String>, AwsError> {
        let mut families = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retry(&self.policy, "ListTaskDefinitionFamilies", || async {
                self.ecs
                    .list_task_definition_families()
                    .family_prefix(prefix)
                    .status(TaskDefinitionFamilyStatus::Active)
                    .max_results(100)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(sdk("ListTaskDefinitionFamilies"))
            })
            .await?;
            families.extend(
                page.families()
                    .iter()
                    .filter(|f| f.starts_with(prefix))
                    .cloned(),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let mut arns = Vec::new();
        for family in &families {
            let mut token: Option<String> = None;
            loop {
                let page = retry(&self.policy, "ListTaskDefinitions", || async {
                    self.ecs
                        .list_task_definitions()
                        .family_prefix(family)
                        .status(TaskDefinitionStatus::Active)
                        .max_results(100)
                        .set_next_token(token.clone())
                        .send()
                        .await
                        .map_err(sdk("ListTaskDefinitions"))
                })
                .await?;
                arns.extend(page.task_definition_arns().iter().cloned());
                token = page.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(arns)
    }

    /// Deregisters a task definition revision (idempotent).
    pub async fn deregister(&self, arn: &str) -> Result<(), AwsError> {
        retry(&self.policy, "DeregisterTaskDefinition", || async {
            match self
                .ecs
                .deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(sdk("DeregisterTaskDefinition"))
            {
                Ok(_) => Ok(()),
                Err(e) if e.kind == Kind::Invalid => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Finds the task started for `run.started_by`, or runs it. One retry loop around both, so a
    /// RunTask whose answer was lost is found rather than run twice; a `ConflictException` (the
    /// client token already started a task, not yet listed) adopts that task. `on_capacity` hears
    /// each "capacity unavailable" answer, which is retried.
    pub async fn find_or_run(
        &self,
        run: &RunSpec<'_>,
        on_capacity: &(dyn Fn(&AwsError) + Sync),
    ) -> Result<Task, AwsError> {
        retry(&self.policy, "RunTask", || async {
            let existing = self.started_for(run.started_by).await?;
            if let Some(task) = self.ours_of(&existing, run.installation).await? {
                return Ok(task);
            }
            let out = match run_request(&self.ecs, &self.cluster, run)?.send().await {
                Ok(out) => out,
                Err(e) => {
                    let Some(arn) = conflict_task(&e) else {
                        return Err(crate::error::from_sdk("RunTask", e));
                    };
                    tracing::info!(task = %arn, "RunTask: the client token already started a task; adopting it");
                    let out = self
                        .ecs
                        .describe_tasks()
                        .cluster(&self.cluster)
                        .tasks(&arn)
                        .include(TaskField::Tags)
                        .send()
                        .await
                        .map_err(sdk("DescribeTasks"))?;
                    return out.tasks().first().cloned().ok_or_else(|| AwsError {
                        // Eventual consistency: described on a later attempt.
                        kind: Kind::Unavailable,
                        ..other("DescribeTasks", "the task of the client token is not described yet")
                    });
                }
            };
            if let Some(task) = out.tasks().first() {
                return Ok(task.clone());
            }
            let failures: Vec<(String, String)> = out
                .failures()
                .iter()
                .map(|f| {
                    (
                        f.reason().unwrap_or_default().to_owned(),
                        f.detail().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let err = error::run_task_failure(&failures);
            if err.code == error::CAPACITY_UNAVAILABLE {
                on_capacity(&err);
            }
            Err(err)
        })
        .await
    }

    /// Tags a task as its pod deleted ([`TAG_DELETED`]).
    pub async fn mark_deleted(&self, arn: &str) -> Result<(), AwsError> {
        retry(&self.policy, "TagResource", || async {
            match self
                .ecs
                .tag_resource()
                .resource_arn(arn)
                .tags(tag(TAG_DELETED, "true"))
                .send()
                .await
                .map_err(sdk("TagResource"))
            {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.kind, Kind::Invalid | Kind::NotFound) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Stops a task; stopping a stopped or unknown task succeeds.
    pub async fn stop(&self, arn: &str) -> Result<(), AwsError> {
        retry(&self.policy, "StopTask", || async {
            match self
                .ecs
                .stop_task()
                .cluster(&self.cluster)
                .task(arn)
                .reason(STOP_REASON)
                .send()
                .await
                .map_err(sdk("StopTask"))
            {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.kind, Kind::Invalid | Kind::NotFound) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

impl Cloud {
    /// Creates secret `name` with `value`, or gives the existing one `value` as its current
    /// version; returns its ARN. `token` makes a retried create idempotent: it must not be derived
    /// from the value (it becomes the version ID, which anyone who may describe the secret sees).
    pub async fn put_secret(
        &self,
        name: &str,
        value: &str,
        token: &str,
        tags: &[(String, String)],
    ) -> Result<String, AwsError> {
        retry(&self.policy, "CreateSecret", || async {
            let mut req = self
                .secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .client_request_token(token)
                .description("virtual-kubelet: a pod's values from Kubernetes Secrets");
            for (k, v) in tags {
                req = req.tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build(),
                );
            }
            match req.send().await.map_err(sdk("CreateSecret")) {
                Ok(out) => out
                    .arn()
                    .map(str::to_owned)
                    .ok_or_else(|| other("CreateSecret", "no secret ARN in the answer")),
                // A lost answer or an earlier attempt of this create: make the value current (the
                // SDK gives PutSecretValue a fresh token, so this is a new version).
                Err(e) if e.code == "ResourceExistsException" => {
                    let out = self
                        .secrets
                        .put_secret_value()
                        .secret_id(name)
                        .secret_string(value)
                        .send()
                        .await
                        .map_err(sdk("PutSecretValue"))?;
                    out.arn()
                        .map(str::to_owned)
                        .ok_or_else(|| other("PutSecretValue", "no secret ARN in the answer"))
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The current string of secret `name`; `None` when there is no such secret.
    pub async fn secret_string(&self, name: &str) -> Result<Option<String>, AwsError> {
        retry(&self.policy, "GetSecretValue", || async {
            match self
                .secrets
                .get_secret_value()
                .secret_id(name)
                .send()
                .await
                .map_err(sdk("GetSecretValue"))
            {
                Ok(out) => Ok(out.secret_string().map(str::to_owned)),
                Err(e) if e.kind == Kind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Secrets whose name starts with `prefix` and that carry the tag `key`=`value` (all pages).
    pub async fn list_secrets(
        &self,
        prefix: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<OurSecret>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retry(&self.policy, "ListSecrets", || async {
                self.secrets
                    .list_secrets()
                    .filters(
                        Filter::builder()
                            .key(FilterNameStringType::Name)
                            .values(prefix)
                            .build(),
                    )
                    .filters(
                        Filter::builder()
                            .key(FilterNameStringType::TagKey)
                            .values(key)
                            .build(),
                    )
                    .max_results(100)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(sdk("ListSecrets"))
            })
            .await?;
            for s in page.secret_list() {
                let tag = |k: &str| {
                    s.tags()
                        .iter()
                        .find(|t| t.key() == Some(k))
                        .and_then(|t| t.value())
                };
                // The filters match name prefixes and tag keys; the identity is checked exactly.
                let (Some(name), Some(v)) = (s.name(), tag(key)) else {
                    continue;
                };
                if v != value || !name.starts_with(prefix) {
                    continue;
                }
                out.push(OurSecret {
                    name: name.to_owned(),
                    pod_uid: tag(naming::TAG_UID).unwrap_or_default().to_owned(),
                });
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Deletes a secret at once (no recovery window); an unknown secret is fine.
    pub async fn delete_secret(&self, name: &str) -> Result<(), AwsError> {
        retry(&self.policy, "DeleteSecret", || async {
            match self
                .secrets
                .delete_secret()
                .secret_id(name)
                .force_delete_without_recovery(true)
                .send()
                .await
                .map_err(sdk("DeleteSecret"))
            {
                Ok(_) => Ok(()),
                Err(e) if e.kind == Kind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

impl Cloud {
    /// The data points of each query within the last [`stats::WINDOW_SECONDS`]: query ID →
    /// (value, epoch seconds). GetMetricData, 500 queries a call, every page.
    pub async fn metric_data(
        &self,
        queries: &[stats::Query],
        now_secs: i64,
    ) -> Result<HashMap<String, Vec<(f64, i64)>>, AwsError> {
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
        let start = aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            now_secs.saturating_sub(stats::WINDOW_SECONDS),
        );
        let end = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now_secs.saturating_add(60));
        let mut out = HashMap::new();
        for chunk in queries.chunks(stats::MAX_QUERIES) {
            let asked: Vec<MetricDataQuery> = chunk
                .iter()
                .map(|q| {
                    let mut metric = Metric::builder()
                        .namespace(stats::NAMESPACE)
                        .metric_name(q.metric);
                    for (name, value) in &q.dimensions {
                        metric = metric
                            .dimensions(Dimension::builder().name(*name).value(value).build());
                    }
                    MetricDataQuery::builder()
                        .id(&q.id)
                        .metric_stat(
                            MetricStat::builder()
                                .metric(metric.build())
                                .period(stats::PERIOD_SECONDS)
                                .stat("Average")
                                .build(),
                        )
                        .return_data(true)
                        .build()
                })
                .collect();
            let mut token: Option<String> = None;
            loop {
                let page = retry(&self.policy, "GetMetricData", || async {
                    self.metrics
                        .get_metric_data()
                        .set_metric_data_queries(Some(asked.clone()))
                        .start_time(start)
                        .end_time(end)
                        // Newest first, so a cut-off answer still has the newest points.
                        .scan_by(ScanBy::TimestampDescending)
                        .set_next_token(token.clone())
                        .send()
                        .await
                        .map_err(sdk("GetMetricData"))
                })
                .await?;
                for r in page.metric_data_results() {
                    let Some(id) = r.id() else { continue };
                    // A later page may carry more points of the same query.
                    out.entry(id.to_owned()).or_insert_with(Vec::new).extend(
                        r.values()
                            .iter()
                            .zip(r.timestamps())
                            .map(|(v, t)| (*v, t.secs())),
                    );
                }
                token = page.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// The task a `ConflictException` names: RunTask's client token was used before.
fn conflict_task(
    e: &aws_sdk_ecs::error::SdkError<
        aws_sdk_ecs::operation::run_task::RunTaskError,
        aws_sdk_ecs::config::http::HttpResponse,
    >,
) -> Option<String> {
    match e.as_service_error()? {
        aws_sdk_ecs::operation::run_task::RunTaskError::ConflictException(c) => {
            c.resource_ids().first().cloned()
        }
        _ => None,
    }
}

fn other(op: &'static str, msg: &str) -> AwsError {
    AwsError::new(&crate::error::ADVICE, op, Kind::Other, "Unexpected", msg)
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn run_request(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    run: &RunSpec<'_>,
) -> Result<aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder, AwsError> {
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(run.network.subnets.clone()))
        .set_security_groups(Some(run.network.security_groups.clone()))
        .assign_public_ip(if run.network.assign_public_ip {
            AssignPublicIp::Enabled
        } else {
            AssignPublicIp::Disabled
        })
        .build()
        .map_err(|e| other("RunTask", &e.to_string()))?;
    let mut overrides =
        TaskOverride::builder().set_task_role_arn(run.task_role_arn.map(str::to_owned));
    for (name, env) in run.overrides {
        let mut c = ContainerOverride::builder().name(name);
        for (k, v) in env {
            c = c.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        overrides = overrides.container_overrides(c.build());
    }
    let mut req = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(run.task_definition)
        .started_by(run.started_by)
        .client_token(run.client_token)
        .count(1)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(vpc)
                .build(),
        )
        .overrides(overrides.build())
        .enable_execute_command(run.enable_execute_command)
        .set_platform_version(run.platform_version.map(str::to_owned));
    // ECS takes a launch type or a capacity provider strategy, never both.
    req = if run.spot {
        req.capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider(FARGATE_SPOT)
                .weight(1)
                .build()
                .map_err(|e| other("RunTask", &e.to_string()))?,
        )
    } else {
        req.launch_type(LaunchType::Fargate)
    };
    for (k, v) in run.tags {
        req = req.tags(tag(k, v));
    }
    Ok(req)
}

fn register_request(
    ecs: &aws_sdk_ecs::Client,
    spec: &TaskDefSpec,
    family: &str,
    tags: &[(String, String)],
) -> aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder
{
    let mut req = ecs
        .register_task_definition()
        .family(family)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu(spec.cpu.to_string())
        .memory(spec.memory_mib.to_string())
        .set_execution_role_arn(spec.execution_role_arn.clone())
        .set_task_role_arn(spec.task_role_arn.clone())
        .runtime_platform(
            RuntimePlatform::builder()
                .operating_system_family(OsFamily::Linux)
                .cpu_architecture(CpuArchitecture::from(spec.cpu_architecture.as_str()))
                .build(),
        );
    if let Some(gib) = spec.ephemeral_storage_gib {
        req = req.ephemeral_storage(
            EphemeralStorage::builder()
                .size_in_gib(i32::try_from(gib).unwrap_or(200))
                .build(),
        );
    }
    for v in &spec.volumes {
        req = req.volumes(Volume::builder().name(v).build());
    }
    for c in &spec.containers {
        req = req.container_definitions(container_definition(spec, c));
    }
    for (k, v) in tags {
        req = req.tags(tag(k, v));
    }
    req
}

fn to_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn container_definition(spec: &TaskDefSpec, c: &crate::plan::ContainerSpec) -> ContainerDefinition {
    let mut b = ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .essential(c.essential)
        .memory(to_i32(c.memory_mib))
        .set_memory_reservation(c.memory_reservation_mib.map(to_i32))
        .cpu(c.cpu_units.map_or(0, to_i32))
        .set_entry_point((!c.entry_point.is_empty()).then(|| c.entry_point.clone()))
        .set_command((!c.command.is_empty()).then(|| c.command.clone()))
        .set_working_directory(c.working_directory.clone())
        .set_stop_timeout(c.stop_timeout.map(|s| i32::try_from(s).unwrap_or(120)))
        .set_restart_policy(c.restart_policy.as_ref().and_then(|r| {
            ContainerRestartPolicy::builder()
                .enabled(true)
                .set_ignored_exit_codes(
                    (!r.ignored_exit_codes.is_empty()).then(|| r.ignored_exit_codes.clone()),
                )
                .restart_attempt_period(r.restart_attempt_period)
                .build()
                .ok()
        }))
        .set_health_check(c.health_check.as_ref().and_then(|h| {
            HealthCheck::builder()
                .set_command(Some(h.command.clone()))
                .interval(h.interval)
                .timeout(h.timeout)
                .retries(h.retries)
                .set_start_period(h.start_period)
                .build()
                .ok()
        }))
        .set_user(c.user.clone())
        .set_readonly_root_filesystem(c.readonly_root_filesystem)
        .pseudo_terminal(c.tty)
        .interactive(c.interactive);
    if !c.capabilities_add.is_empty() || !c.capabilities_drop.is_empty() {
        b = b.linux_parameters(
            LinuxParameters::builder()
                .capabilities(
                    KernelCapabilities::builder()
                        .set_add(Some(c.capabilities_add.clone()))
                        .set_drop(Some(c.capabilities_drop.clone()))
                        .build(),
                )
                .build(),
        );
    }
    for (name, value) in &c.system_controls {
        b = b.system_controls(
            SystemControl::builder()
                .namespace(name)
                .value(value)
                .build(),
        );
    }
    for (port, proto) in &c.ports {
        b = b.port_mappings(
            PortMapping::builder()
                .container_port(*port)
                .protocol(if proto == "udp" {
                    TransportProtocol::Udp
                } else {
                    TransportProtocol::Tcp
                })
                .build(),
        );
    }
    for (vol, path, ro) in &c.mounts {
        b = b.mount_points(
            MountPoint::builder()
                .source_volume(vol)
                .container_path(path)
                .read_only(*ro)
                .build(),
        );
    }
    for dep in &c.depends_on_success {
        if let Ok(d) = ContainerDependency::builder()
            .container_name(dep)
            .condition(ContainerCondition::Success)
            .build()
        {
            b = b.depends_on(d);
        }
    }
    if let Some(arn) = &spec.values_secret_arn {
        for (name, key) in &c.secrets {
            // `<arn>:<json-key>:<version-stage>:<version-id>`; empty stage and ID = AWSCURRENT.
            if let Ok(secret) = Secret::builder()
                .name(name)
                .value_from(format!("{arn}:{key}::"))
                .build()
            {
                b = b.secrets(secret);
            }
        }
    }
    if let Some(arn) = c
        .registry_secret
        .and_then(|i| spec.registry_secret_arns.get(i))
        && let Ok(creds) = RepositoryCredentials::builder()
            .credentials_parameter(arn)
            .build()
    {
        b = b.repository_credentials(creds);
    }
    if let Some((group, region, prefix)) = &spec.awslogs
        && let Ok(log) = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", group)
            .options("awslogs-region", region)
            .options("awslogs-stream-prefix", prefix)
            .build()
    {
        b = b.log_configuration(log);
    }
    b.build()
}

/// The awslogs stream of a container: `<prefix>/<container>/<task-id>`.
pub fn log_stream(prefix: &str, container: &str, task_arn: &str) -> String {
    let task_id = task_arn.rsplit('/').next().unwrap_or(task_arn);
    format!("{prefix}/{container}/{task_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> podprovider_proto::v1::Pod {
        use podprovider_proto::v1::{Container, ExecAction, PodRef, Probe, probe::Handler};
        podprovider_proto::v1::Pod {
            pod_ref: Some(PodRef {
                namespace: "default".into(),
                name: "p".into(),
                uid: "u".into(),
            }),
            containers: vec![Container {
                name: "web".into(),
                image: "nginx".into(),
                liveness_probe: Some(Probe {
                    handler: Some(Handler::Exec(ExecAction {
                        command: vec!["cat".into(), "/ok".into()],
                    })),
                    period_seconds: 10,
                    timeout_seconds: 2,
                    failure_threshold: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            restart_policy: podprovider_proto::v1::RestartPolicy::OnFailure as i32,
            termination_grace_period_seconds: Some(45),
            ..Default::default()
        }
    }

    fn defs() -> crate::plan::DefSettings {
        crate::plan::DefSettings {
            execution_role_arn: Some("arn:aws:iam::123456789012:role/exec".into()),
            files_image: "busybox".into(),
            cpu_architecture: "X86_64".into(),
            ..Default::default()
        }
    }

    #[test]
    fn container_definition_carries_restart_policy_health_check_and_stop_timeout() {
        let plan = crate::plan::plan(&pod(), &defs()).expect("valid");
        let c = &plan.spec.containers[0];
        let def = container_definition(&plan.spec, c);
        // ContainerDefinition.restartPolicy: OnFailure = enabled, exit code 0 ignored.
        let restart = def.restart_policy().expect("restartPolicy");
        assert!(restart.enabled());
        assert_eq!(restart.ignored_exit_codes(), [0]);
        assert_eq!(restart.restart_attempt_period(), Some(60));
        // ContainerDefinition.healthCheck from the exec liveness probe.
        let hc = def.health_check().expect("healthCheck");
        assert_eq!(hc.command(), ["CMD", "cat", "/ok"]);
        assert_eq!(
            (hc.interval(), hc.timeout(), hc.retries(), hc.start_period()),
            (Some(10), Some(2), Some(3), None)
        );
        // ContainerDefinition.stopTimeout = terminationGracePeriodSeconds.
        assert_eq!(def.stop_timeout(), Some(45));

        let mut never = pod();
        never.restart_policy = podprovider_proto::v1::RestartPolicy::Never as i32;
        never.containers[0].liveness_probe = None;
        let plan = crate::plan::plan(&never, &defs()).expect("valid");
        let def = container_definition(&plan.spec, &plan.spec.containers[0]);
        assert!(
            def.restart_policy().is_none(),
            "Never: ECS's default, no restarts"
        );
        assert!(def.health_check().is_none());
    }

    #[test]
    fn run_task_asks_for_fargate_spot_and_the_pods_task_role() {
        let ecs = aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::Config::builder()
                .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
                .region(aws_sdk_ecs::config::Region::new("us-east-1"))
                .build(),
        );
        let network = Network {
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["sg-1".into()],
            assign_public_ip: false,
        };
        let run = |spot: bool, role: Option<&str>| {
            let spec = RunSpec {
                task_definition: "arn:aws:ecs:us-east-1:1:task-definition/vk-x:1",
                started_by: "vk-default-p-1",
                client_token: "t",
                tags: &[],
                overrides: &[],
                network: &network,
                platform_version: None,
                enable_execute_command: false,
                installation: "i",
                task_role_arn: role,
                spot,
            };
            run_request(&ecs, "vk", &spec).expect("request")
        };
        let on_demand = run(false, None);
        let input = on_demand.as_input();
        assert_eq!(input.get_launch_type(), &Some(LaunchType::Fargate));
        assert!(input.get_capacity_provider_strategy().is_none());
        assert_eq!(
            input
                .get_overrides()
                .as_ref()
                .and_then(|o| o.task_role_arn()),
            None
        );

        let role = "arn:aws:iam::123456789012:role/app";
        let spot = run(true, Some(role));
        let input = spot.as_input();
        // RunTask: capacityProviderStrategy FARGATE_SPOT and no launchType (ECS takes one).
        assert_eq!(input.get_launch_type(), &None);
        let strategy = input
            .get_capacity_provider_strategy()
            .as_deref()
            .unwrap_or_default();
        assert_eq!(strategy.len(), 1);
        assert_eq!(strategy[0].capacity_provider(), "FARGATE_SPOT");
        assert_eq!(strategy[0].weight(), 1);
        // RunTask overrides.taskRoleArn.
        assert_eq!(
            input
                .get_overrides()
                .as_ref()
                .and_then(|o| o.task_role_arn()),
            Some(role)
        );
    }

    /// The AWS keys the SDK clients hold (given as static keys, as the environment chain would
    /// give them) and the pod's sensitive values, formatted with `{:?}` as a log line or an error
    /// would: no canary.
    #[test]
    fn debug_of_secret_holding_types_shows_no_canary() {
        const CANARY: &str = "canary-5ecret-7f3a";
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new(
                    "AKIAEXAMPLE",
                    CANARY,
                    Some(CANARY.into()),
                    None,
                    "test",
                ),
            ))
            .build();
        let cloud = Cloud {
            ecs: aws_sdk_ecs::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            metrics: aws_sdk_cloudwatch::Client::new(&sdk),
            cluster: "vk".into(),
            policy: RetryPolicy::default(),
        };
        let secrets = crate::plan::Secrets {
            values: [("PASSWORD".to_owned(), CANARY.to_owned())].into(),
            registries: vec![(CANARY.to_owned(), CANARY.to_owned())],
        };
        for shown in [
            format!("{sdk:?}"),
            format!("{cloud:?}"),
            format!("{cloud:#?}"),
            format!("{secrets:?}"),
        ] {
            assert!(!shown.contains(CANARY), "{shown}");
        }
    }

    #[test]
    fn log_stream_names_follow_awslogs() {
        assert_eq!(
            log_stream("vk", "web", "arn:aws:ecs:us-east-1:1:task/cluster/0123abcd"),
            "vk/web/0123abcd"
        );
    }
}
