//! The workloads of an event, built with no API calls: the issuer Deployment, Service
//! and PodDisruptionBudget, and the consumer Deployment, sized by [`crate::sizing`],
//! owned by the CouponEvent (so deleting it removes them), reading the backends'
//! addresses from the event's Secret.
//!
//! How the binaries are started (command, environment names, port, probe paths) comes
//! from [`couponrush_core::workload`], which their own configurations also read; the
//! tests below parse the containers built here with the binaries' own parsers. The pods
//! meet the `restricted` Pod Security Standard and get no service-account token: the
//! workloads never call the Kubernetes API.

use std::collections::BTreeMap;

use couponrush_core::workload::{self, HEALTHZ_PATH, PORT_NAME, READYZ_PATH, RUN_AS_USER, Workload, env};
use couponrush_crds::CouponEvent;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::sizing::{PodResources, Sizing};

pub const ISSUER: &str = workload::ISSUER.component;
pub const CONSUMER: &str = workload::CONSUMER.component;
pub const EVENT_LABEL: &str = "couponrush.io/event";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// What the workloads need besides the event: images and where the backends are.
#[derive(Clone, Debug)]
pub struct WorkloadInputs {
    pub issuer_image: String,
    pub consumer_image: String,
    pub backends_secret: String,
    pub topic: String,
    pub sizing: Sizing,
}

/// `<event>-issuer` / `<event>-consumer`.
pub fn workload_name(event: &str, component: &str) -> String {
    format!("{event}-{component}")
}

/// The Kafka topic of an event: one per event, so its consumers are its own.
pub fn topic_name(namespace: &str, event: &str) -> String {
    format!("couponrush.{namespace}.{event}")
}

/// The consumer group of an event's consumers.
pub fn consumer_group(namespace: &str, event: &str) -> String {
    format!("couponrush-{namespace}-{event}")
}

fn labels(event: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), format!("couponrush-{component}")),
        ("app.kubernetes.io/part-of".to_owned(), "couponrush".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "couponrush-operator".to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (EVENT_LABEL.to_owned(), event.to_owned()),
    ])
}

fn selector(event: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(COMPONENT_LABEL.to_owned(), component.to_owned()), (EVENT_LABEL.to_owned(), event.to_owned())])
}

fn meta(ce: &CouponEvent, component: &str) -> ObjectMeta {
    let name = ce.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(workload_name(&name, component)),
        namespace: ce.metadata.namespace.clone(),
        labels: Some(labels(&name, component)),
        owner_references: ce.controller_owner_ref(&()).map(|owner: OwnerReference| vec![owner]),
        ..ObjectMeta::default()
    }
}

fn resources(pod: &PodResources) -> ResourceRequirements {
    let quantities = |cpu: u32, mib: u32| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(format!("{cpu}m"))),
            ("memory".to_owned(), Quantity(format!("{mib}Mi"))),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities(pod.cpu_request_millis, pod.memory_request_mib)),
        limits: Some(quantities(pod.cpu_limit_millis, pod.memory_limit_mib)),
        ..ResourceRequirements::default()
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(name, value)| EnvVar { name: (*name).to_owned(), value: Some(value.clone()), ..EnvVar::default() })
        .collect()
}

/// Probes are generous on timeouts: an issuer saturated by a spike on a small node may
/// answer late, and a liveness failure would kill it mid-spike (readiness failing only
/// takes it out of the Service for a moment).
fn probe(path: &str, port: u16, period_seconds: i32, timeout_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(timeout_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The `restricted` Pod Security Standard, for the pod: the image's non-root user and
/// the runtime's default seccomp profile.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

/// The `restricted` Pod Security Standard, for the container, and a read-only root
/// filesystem: neither binary writes a file (logs go to stdout, librdkafka keeps its
/// state in memory), so no writable volume either.
fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
        ..SecurityContext::default()
    }
}

fn deployment(
    ce: &CouponEvent,
    workload: &Workload,
    image: &str,
    replicas: u32,
    pod: &PodResources,
    env_vars: Vec<EnvVar>,
    secret: &str,
) -> Deployment {
    let event = ce.metadata.name.clone().unwrap_or_default();
    let component = workload.component;
    let container = Container {
        name: component.to_owned(),
        image: Some(image.to_owned()),
        command: Some(workload.command()),
        args: Some(workload.args()).filter(|args| !args.is_empty()),
        env: Some(env_vars),
        // The backends' addresses and the JWT secret: each key is the variable of that name.
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret.to_owned(), optional: Some(false) }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: i32::from(workload.port),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(pod)),
        readiness_probe: Some(probe(READYZ_PATH, workload.port, 5, 3)),
        liveness_probe: Some(probe(HEALTHZ_PATH, workload.port, 10, 5)),
        security_context: Some(container_security()),
        ..Container::default()
    };
    Deployment {
        metadata: meta(ce, component),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector { match_labels: Some(selector(&event, component)), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&event, component)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The workloads never call the Kubernetes API.
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    // Longer than the binaries' 10 s drain, so they finish in-flight work.
                    termination_grace_period_seconds: Some(30),
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector(&event, component)),
                            ..LabelSelector::default()
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn issuer_deployment(ce: &CouponEvent, inputs: &WorkloadInputs) -> Deployment {
    let vars = env(&[
        (env::LISTEN, workload::ISSUER.pod_listen().to_string()),
        (env::KAFKA_TOPIC, inputs.topic.clone()),
        (env::LOG_JSON, "true".to_owned()),
        // The backends Secret arrives as `envFrom`, and whoever may edit it must not be
        // able to switch token checks off: a variable in `env` wins over the same name
        // from `envFrom`, so a TRUST_USER_HEADER key in the Secret is overridden here.
        // (The other JWT keys can only tighten the checks, or stop the issuer from
        // starting: a JWT_LEEWAY above its 5-minute limit is refused at start-up.)
        (env::TRUST_USER_HEADER, "false".to_owned()),
        // tokio sizes its pool from the CPU quota rounded down: 1800m would give one
        // worker, so the request path could never use the limit's second core
        // (seen in bench/pod.sh's container). One worker per started core of the limit.
        (env::TOKIO_WORKER_THREADS, inputs.sizing.issuer.cpu_limit_millis.div_ceil(1_000).max(1).to_string()),
    ]);
    deployment(
        ce,
        &workload::ISSUER,
        &inputs.issuer_image,
        inputs.sizing.issuer_replicas,
        &inputs.sizing.issuer,
        vars,
        &inputs.backends_secret,
    )
}

pub fn consumer_deployment(ce: &CouponEvent, inputs: &WorkloadInputs) -> Deployment {
    let namespace = ce.metadata.namespace.clone().unwrap_or_default();
    let name = ce.metadata.name.clone().unwrap_or_default();
    let vars = env(&[
        (env::LISTEN, workload::CONSUMER.pod_listen().to_string()),
        (env::KAFKA_TOPIC, inputs.topic.clone()),
        (env::KAFKA_GROUP, consumer_group(&namespace, &name)),
        (env::LOG_JSON, "true".to_owned()),
    ]);
    deployment(
        ce,
        &workload::CONSUMER,
        &inputs.consumer_image,
        inputs.sizing.consumer_replicas,
        &inputs.sizing.consumer,
        vars,
        &inputs.backends_secret,
    )
}

pub fn issuer_service(ce: &CouponEvent) -> Service {
    let event = ce.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: meta(ce, ISSUER),
        spec: Some(ServiceSpec {
            selector: Some(selector(&event, ISSUER)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: 80,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one issuer down at a time for voluntary disruptions (node drains).
pub fn issuer_disruption_budget(ce: &CouponEvent) -> PodDisruptionBudget {
    let event = ce.metadata.name.clone().unwrap_or_default();
    PodDisruptionBudget {
        metadata: meta(ce, ISSUER),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector(&event, ISSUER)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::size;
    use clap::{CommandFactory, Parser};
    use couponrush_core::workload::testing;
    use couponrush_crds::{Capacity, CouponEventSpec};
    use k8s_openapi::api::core::v1::Secret;
    use std::collections::BTreeSet;

    fn event() -> CouponEvent {
        let spec: CouponEventSpec = serde_json::from_value(serde_json::json!({
            "coupon": {"name": "c", "amount": 1, "currency": "KRW"},
            "stock": 1000,
            "startTime": "2026-12-01T10:00:00+09:00"
        }))
        .expect("spec");
        let mut ce = CouponEvent::new("opening-day", spec);
        ce.metadata.namespace = Some("marketing".into());
        ce.metadata.uid = Some("uid-1".into());
        ce
    }

    fn inputs() -> WorkloadInputs {
        WorkloadInputs {
            issuer_image: "issuer:1".into(),
            consumer_image: "consumer:1".into(),
            backends_secret: "backends".into(),
            topic: topic_name("marketing", "opening-day"),
            sizing: size(&Capacity::default()),
        }
    }

    #[test]
    fn the_issuer_deployment_is_sized_owned_and_configured() {
        let deployment = issuer_deployment(&event(), &inputs());
        assert_eq!(deployment.metadata.name.as_deref(), Some("opening-day-issuer"));
        let owner = &deployment.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("CouponEvent", Some(true)));
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(4));
        let pod = spec.template.spec.expect("pod");
        let container = &pod.containers[0];
        let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        assert_eq!(requests["cpu"], Quantity("900m".into()));
        let env = container.env.as_ref().expect("env");
        assert!(
            env.iter()
                .any(|e| e.name == "KAFKA_TOPIC" && e.value.as_deref() == Some("couponrush.marketing.opening-day"))
        );
        let from = container.env_from.as_ref().expect("envFrom");
        assert_eq!(from[0].secret_ref.as_ref().map(|s| s.name.as_str()), Some("backends"));
        assert_eq!(pod.topology_spread_constraints.expect("spread")[0].topology_key, "kubernetes.io/hostname");
    }

    #[test]
    fn the_service_and_budget_select_the_issuers() {
        let service = issuer_service(&event());
        let budget = issuer_disruption_budget(&event());
        let selected = service.spec.and_then(|s| s.selector).expect("selector");
        assert_eq!(selected[EVENT_LABEL], "opening-day");
        assert_eq!(budget.spec.and_then(|s| s.max_unavailable), Some(IntOrString::Int(1)));
    }

    fn pod(deployment: &Deployment) -> PodSpec {
        deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod spec")
    }

    /// The Secret users are told to create (examples/), as the containers' `envFrom`.
    fn example_secret() -> BTreeMap<String, String> {
        let secret: Secret =
            serde_yaml::from_str(include_str!("../../examples/backends-secret.yaml")).expect("example Secret");
        secret.string_data.expect("stringData")
    }

    /// The container's command line and environment, as the kubelet starts it: the
    /// Secret's keys (`envFrom`) first, then `env` on top; a `valueFrom` becomes a sample.
    fn start_up(container: &Container) -> (Vec<String>, BTreeMap<String, String>) {
        start_up_with(container, &example_secret())
    }

    fn start_up_with(
        container: &Container,
        secret: &BTreeMap<String, String>,
    ) -> (Vec<String>, BTreeMap<String, String>) {
        let argv = container.command.iter().flatten().chain(container.args.iter().flatten()).cloned().collect();
        let mut env = BTreeMap::new();
        for from in container.env_from.iter().flatten() {
            assert!(from.secret_ref.is_some(), "only Secrets are expected in envFrom: {from:?}");
            env.extend(secret.clone());
        }
        for var in container.env.iter().flatten() {
            let value = var.value.clone().unwrap_or_else(|| format!("sample-{}", var.name.to_lowercase()));
            env.insert(var.name.clone(), value);
        }
        (argv, env)
    }

    /// Parses the container's start-up with its binary's own parser, in a child process
    /// whose environment is exactly the container's (see [`child_parses`]).
    fn parse(container: &Container) -> serde_json::Value {
        parse_with(container, &example_secret())
    }

    fn parse_with(container: &Container, secret: &BTreeMap<String, String>) -> serde_json::Value {
        let (argv, env) = start_up_with(container, secret);
        let vars = env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let parsed = testing::parse_in_child("resources::tests::child_parses", &argv, vars);
        serde_json::from_str(&parsed).expect("the child's JSON")
    }

    /// In the child of [`parse`]: the binary that the command line starts parses it.
    #[test]
    fn child_parses() {
        let Some(argv) = testing::child_argv() else { return };
        let binary = argv.first().cloned().unwrap_or_default();
        let parsed = if binary == workload::ISSUER.binary {
            use couponrush_issuer::config::{Cli, Command};
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
            let (backends, log_json) = (cli.backends.clone(), cli.log_json);
            let Command::Serve(serve) = cli.into_command() else { panic!("{argv:?} does not serve") };
            serde_json::json!({
                "listen": serve.listen.to_string(),
                "redis_url": backends.redis_url,
                "database_url": backends.database_url,
                "kafka_brokers": backends.kafka_brokers,
                "kafka_topic": backends.kafka_topic,
                "jwt_hs256_secret": serve.jwt_hs256_secret,
                "trust_user_header": serve.trust_user_header,
                "verifies_tokens": matches!(
                    couponrush_issuer::auth::Authenticator::from_config(&serve),
                    Ok(couponrush_issuer::auth::Authenticator::Jwt(_))
                ),
                "log_json": log_json,
            })
        } else if binary == workload::CONSUMER.binary {
            let config = couponrush_consumer::config::Config::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
            serde_json::json!({
                "listen": config.listen.to_string(),
                "redis_url": config.redis_url,
                "database_url": config.database_url,
                "kafka_brokers": config.kafka_brokers,
                "kafka_topic": config.kafka_topic,
                "kafka_group": config.kafka_group,
                "log_json": config.log_json,
            })
        } else {
            panic!("no parser for {binary}")
        };
        println!("PARSED {parsed}");
    }

    /// Every environment variable a clap command (and its subcommands) reads.
    fn env_names(command: &clap::Command) -> BTreeSet<String> {
        let own = command.get_arguments().filter_map(|arg| arg.get_env()).map(|e| e.to_string_lossy().into_owned());
        own.chain(command.get_subcommands().flat_map(env_names)).collect()
    }

    /// The container listens on its port on every interface, its probes ask that port
    /// the contract's paths, and it sets no variable its binary does not read.
    fn assert_port_probes_and_names(container: &Container, parsed: &serde_json::Value, reads: &BTreeSet<String>) {
        let port = container.ports.as_ref().expect("ports")[0].clone();
        assert_eq!(port.name.as_deref(), Some(PORT_NAME));
        assert_eq!(parsed["listen"], format!("0.0.0.0:{}", port.container_port));
        for (probe, path) in [(&container.readiness_probe, "/readyz"), (&container.liveness_probe, "/healthz")] {
            let get = probe.as_ref().and_then(|p| p.http_get.clone()).expect("an HTTP probe");
            assert_eq!((get.path.as_deref(), get.port), (Some(path), IntOrString::Int(port.container_port)));
        }
        let (_, env) = start_up(container);
        let unread: Vec<_> = env.keys().filter(|name| !reads.contains(*name)).collect();
        assert!(unread.is_empty(), "{} never reads {unread:?}", container.name);
    }

    #[test]
    fn the_issuer_container_starts_as_the_issuer_parses_it() {
        let deployment = issuer_deployment(&event(), &inputs());
        let container = &pod(&deployment).containers[0];
        let parsed = parse(container);
        let secret = example_secret();
        assert_eq!(parsed["kafka_topic"], "couponrush.marketing.opening-day");
        assert_eq!(parsed["redis_url"], secret["REDIS_URL"]);
        assert_eq!(parsed["database_url"], secret["DATABASE_URL"]);
        assert_eq!(parsed["kafka_brokers"], secret["KAFKA_BROKERS"]);
        assert_eq!(parsed["jwt_hs256_secret"], secret["JWT_HS256_SECRET"]);
        assert_eq!(parsed["log_json"], true);
        assert_eq!(parsed["listen"], "0.0.0.0:8080");
        let mut reads = env_names(&couponrush_issuer::config::Cli::command());
        // Read by the issuer's runtime (tokio), not by its command line.
        reads.insert(env::TOKIO_WORKER_THREADS.to_owned());
        assert_port_probes_and_names(container, &parsed, &reads);
        let (_, vars) = start_up(container);
        // A t3.medium issuer's limit is 1800m: two workers, so it can use both cores.
        assert_eq!(vars.get(env::TOKIO_WORKER_THREADS).map(String::as_str), Some("2"));
    }

    /// Whoever can edit the backends Secret cannot switch the issuer's token checks off:
    /// TRUST_USER_HEADER in the Secret is overridden by the Deployment's own `env`, and a
    /// leeway that would make `exp` meaningless stops the issuer from starting at all.
    #[test]
    fn the_backends_secret_cannot_switch_token_checks_off() {
        let deployment = issuer_deployment(&event(), &inputs());
        let container = &pod(&deployment).containers[0];
        let mut secret = example_secret();
        secret.insert("TRUST_USER_HEADER".to_owned(), "true".to_owned());
        let parsed = parse_with(container, &secret);
        assert_eq!(parsed["trust_user_header"], false, "{parsed}");
        assert_eq!(parsed["verifies_tokens"], true, "{parsed}");

        secret.insert("JWT_LEEWAY".to_owned(), "100000s".to_owned());
        let parsed = parse_with(container, &secret);
        assert_eq!(parsed["verifies_tokens"], false, "the issuer must refuse to start: {parsed}");
    }

    #[test]
    fn the_consumer_container_starts_as_the_consumer_parses_it() {
        let deployment = consumer_deployment(&event(), &inputs());
        let container = &pod(&deployment).containers[0];
        let parsed = parse(container);
        let secret = example_secret();
        assert_eq!(parsed["kafka_topic"], "couponrush.marketing.opening-day");
        assert_eq!(parsed["kafka_group"], "couponrush-marketing-opening-day");
        assert_eq!(parsed["redis_url"], secret["REDIS_URL"]);
        assert_eq!(parsed["database_url"], secret["DATABASE_URL"]);
        assert_eq!(parsed["kafka_brokers"], secret["KAFKA_BROKERS"]);
        assert_eq!(parsed["log_json"], true);
        assert_eq!(parsed["listen"], "0.0.0.0:9090");
        let mut reads = env_names(&couponrush_consumer::config::Config::command());
        // The consumer gets the whole Secret; the JWT secret is the issuer's.
        reads.insert("JWT_HS256_SECRET".to_owned());
        assert_port_probes_and_names(container, &parsed, &reads);
    }

    #[test]
    fn the_service_targets_the_issuer_port() {
        let deployment = issuer_deployment(&event(), &inputs());
        let port = pod(&deployment).containers[0].ports.clone().expect("ports")[0].clone();
        let service = issuer_service(&event()).spec.and_then(|s| s.ports).expect("ports")[0].clone();
        assert_eq!(service.target_port, port.name.map(IntOrString::String));
    }

    /// What the `restricted` Pod Security Standard asks of a pod, plus a read-only root
    /// filesystem and no service-account token.
    #[test]
    fn the_pods_are_restricted() {
        for deployment in [issuer_deployment(&event(), &inputs()), consumer_deployment(&event(), &inputs())] {
            let pod = pod(&deployment);
            let name = deployment.metadata.name.clone().unwrap_or_default();
            assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
            assert!(pod.volumes.is_none() && pod.host_network.is_none() && pod.host_pid.is_none(), "{name}");
            let security = pod.security_context.clone().expect("pod securityContext");
            assert_eq!(security.run_as_non_root, Some(true), "{name}");
            assert_eq!((security.run_as_user, security.run_as_group), (Some(65532), Some(65532)), "{name}");
            assert_eq!(security.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"), "{name}");
            for container in &pod.containers {
                let security = container.security_context.clone().expect("container securityContext");
                assert_eq!(security.run_as_non_root, Some(true), "{name}");
                assert_eq!((security.run_as_user, security.run_as_group), (Some(65532), Some(65532)), "{name}");
                assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
                assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
                assert_ne!(security.privileged, Some(true), "{name}");
                let capabilities = security.capabilities.expect("capabilities");
                assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]), "{name}");
                assert!(capabilities.add.is_none(), "{name}");
                assert_eq!(security.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"), "{name}");
            }
        }
    }
}
