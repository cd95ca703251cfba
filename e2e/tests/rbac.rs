//! The chart's RBAC as a tested fact, on the local control plane (local/cluster/cluster.sh
//! up) with the real Redis, Kafka and MariaDB. Each test renders the chart's ServiceAccount
//! and rbac.yaml with helm, applies them, asks the apiserver for a token of that
//! ServiceAccount (TokenRequest) and talks to the same apiserver with it, never with the
//! admin's credentials:
//!
//! - the operator, in-process but authenticated as the ServiceAccount, runs an event from
//!   Warming to Completed and through its deletion, cluster-wide and with watchNamespaces;
//! - with watchNamespaces it is refused (403) a Secret of a namespace it does not watch,
//!   kube-system's included, and leaves that namespace's events alone;
//! - its grants, as the apiserver reports them (SelfSubjectRulesReview, what `kubectl auth
//!   can-i --list` shows), equal charts/couponrush/rbac-expected.txt, so any change to
//!   them is a reviewed diff (UPDATE_RBAC_EXPECTED=1 rewrites the file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use couponrush_crds::{CouponEvent, Phase};
use couponrush_e2e::load::{Spike, check_sold_out, rows};
use couponrush_e2e::{Scope, Service, unique, wait_until};
use couponrush_issuer::config::{Backends, ServeConfig};
use couponrush_operator::clock::Clock;
use couponrush_operator::config::Config;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

// The label of the control-plane tests' namespaces: each test removes what earlier ones
// left, so that a cluster-wide operator has only its own test's events.
use couponrush_e2e::TEST_NAMESPACE_LABEL;
/// On the cluster-scoped RBAC objects these tests install, for the same clean-up.
const TEST_RBAC_LABEL: &str = "couponrush.io/e2e-rbac-test";
const MANAGER: &str = "couponrush-e2e";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> anyhow::Result<PathBuf> {
    if let Some(helm) = std::env::var_os("HELM") {
        return Ok(helm.into());
    }
    let out = std::process::Command::new(repo().join("local/cluster/build.sh"))
        .arg("print-tools-dir")
        .output()
        .context("local/cluster/build.sh print-tools-dir")?;
    anyhow::ensure!(out.status.success(), "local/cluster/build.sh print-tools-dir failed");
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("helm"))
}

async fn admin() -> anyhow::Result<Client> {
    Client::try_default().await.context("no cluster: run local/cluster/cluster.sh up and export its KUBECONFIG")
}

/// Installs the CRD (as the chart's crds/ would) and removes what earlier tests left.
async fn prepare(admin: &Client) -> anyhow::Result<()> {
    couponrush_e2e::install_crd(admin).await?;
    couponrush_e2e::clear_test_namespaces(admin).await?;
    let earlier = ListParams::default().labels(TEST_RBAC_LABEL);
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    for role in roles.list(&earlier).await? {
        roles.delete(&role.name_any(), &DeleteParams::background()).await?;
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    for binding in bindings.list(&earlier).await? {
        bindings.delete(&binding.name_any(), &DeleteParams::background()).await?;
    }
    Ok(())
}

async fn create_namespace(admin: &Client, name: &str) -> anyhow::Result<()> {
    let namespace = json!({"metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}}});
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &serde_json::from_value(namespace)?).await?;
    Ok(())
}

/// The chart installed as far as RBAC goes, and a client that is its ServiceAccount.
struct Installed {
    /// The release namespace: the ServiceAccount and the Lease live here.
    namespace: String,
    operator: Client,
}

/// Renders the chart's ServiceAccount and rbac.yaml for `release` in `namespace` (made
/// here) with `--set` `values`, applies them as the admin, and returns a client that
/// authenticates with a fresh token of the ServiceAccount.
async fn install(admin: &Client, release: &str, values: &[String]) -> anyhow::Result<Installed> {
    let namespace = unique("rbac-system");
    create_namespace(admin, &namespace).await?;
    let mut command = std::process::Command::new(helm()?);
    command.args(["template", release]).arg(repo().join("charts/couponrush")).args(["--namespace", &namespace]).args([
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]);
    for value in values {
        command.args(["--set", value]);
    }
    let out = command.output().context("helm template")?;
    anyhow::ensure!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let mut service_account = None;
    for document in serde_yaml::Deserializer::from_slice(&out.stdout) {
        let mut object = serde_json::to_value(serde_yaml::Value::deserialize(document)?)?;
        if object.is_null() {
            continue;
        }
        object["metadata"]["labels"][TEST_RBAC_LABEL] = json!("true");
        match object["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                let account: ServiceAccount = serde_json::from_value(object)?;
                service_account = Some(account.name_any());
                apply(Api::namespaced(admin.clone(), &namespace), &account).await?;
            }
            "ClusterRole" => apply::<ClusterRole>(Api::all(admin.clone()), &serde_json::from_value(object)?).await?,
            "ClusterRoleBinding" => {
                apply::<ClusterRoleBinding>(Api::all(admin.clone()), &serde_json::from_value(object)?).await?
            }
            "Role" => {
                let role: Role = serde_json::from_value(object)?;
                apply(Api::namespaced(admin.clone(), &role.namespace().context("Role namespace")?), &role).await?;
            }
            "RoleBinding" => {
                let binding: RoleBinding = serde_json::from_value(object)?;
                let api = Api::namespaced(admin.clone(), &binding.namespace().context("RoleBinding namespace")?);
                apply(api, &binding).await?;
            }
            other => bail!("the chart's RBAC templates rendered an unexpected {other}"),
        }
    }
    let service_account = service_account.context("the chart rendered no ServiceAccount")?;
    let operator = client_as(admin, &namespace, &service_account).await?;
    // The RBAC authorizer sees new bindings through its informers: wait for the Lease grant.
    let installed = Installed { namespace, operator };
    wait_until("the ServiceAccount's grants to apply", Duration::from_secs(20), || async {
        Ok(grants(&installed.operator, &installed.namespace).await?.iter().any(|line| line.starts_with("leases.")))
    })
    .await?;
    Ok(installed)
}

/// A client of the same apiserver that authenticates as `service_account` with a token
/// from the TokenRequest API, and with nothing of the admin's credentials.
async fn client_as(admin: &Client, namespace: &str, service_account: &str) -> anyhow::Result<Client> {
    let request = TokenRequest {
        spec: TokenRequestSpec { audiences: Vec::new(), expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {namespace}/{service_account}"))?
        .status
        .context("TokenRequest without a token")?
        .token;
    let mut config = kube::Config::infer().await?;
    config.auth_info = AuthInfo { token: Some(token.into()), ..AuthInfo::default() };
    Ok(Client::try_from(config)?)
}

async fn apply<K>(api: Api<K>, object: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    api.patch(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await?;
    Ok(())
}

/// What `client` may do in `namespace`, one line per resource (or non-resource URL) with
/// its verbs, sorted: the apiserver's SelfSubjectRulesReview, as `kubectl auth can-i
/// --list` shows it.
async fn grants(client: &Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec { namespace: Some(namespace.to_owned()) },
        ..Default::default()
    };
    let status = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?
        .status
        .context("SelfSubjectRulesReview without a status")?;
    anyhow::ensure!(!status.incomplete, "incomplete rules: {:?}", status.evaluation_error);
    let mut verbs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in &status.resource_rules {
        let names = rule.resource_names.clone().unwrap_or_default();
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let mut key = if group.is_empty() { resource.clone() } else { format!("{resource}.{group}") };
                if !names.is_empty() {
                    key = format!("{key} (names: {})", names.join(","));
                }
                verbs.entry(key).or_default().extend(rule.verbs.iter().cloned());
            }
        }
    }
    for rule in &status.non_resource_rules {
        for url in rule.non_resource_urls.iter().flatten() {
            verbs.entry(format!("url {url}")).or_default().extend(rule.verbs.iter().cloned());
        }
    }
    Ok(verbs.into_iter().map(|(key, verbs)| format!("{key:<46} {}", Vec::from_iter(verbs).join(" "))).collect())
}

fn config(installed: &Installed, listen: std::net::SocketAddr, watch: &[String]) -> Config {
    Config {
        listen,
        issuer_image: "couponrush:test".into(),
        consumer_image: "couponrush:test".into(),
        default_backends_secret: "couponrush-backends".into(),
        leader_election_namespace: installed.namespace.clone(),
        leader_election_lease: "couponrush-operator".into(),
        identity: "operator-rbac".into(),
        // Long enough that a renewal stalled by a loaded machine does not end the run.
        lease_duration: Duration::from_secs(15),
        watch_namespaces: watch.to_vec(),
        log_json: false,
    }
}

/// The operator, started in-process with the ServiceAccount's client.
struct Operator {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), couponrush_operator::RunError>>,
}

async fn start_operator(installed: &Installed, watch: &[String]) -> anyhow::Result<Operator> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = config(installed, listener.local_addr()?, watch);
    let stop = CancellationToken::new();
    let client = installed.operator.clone();
    let task =
        tokio::spawn(couponrush_operator::run_with_client(config, client, listener, stop.clone(), Clock::system()));
    Ok(Operator { stop, task })
}

impl Operator {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.context("operator did not stop")???;
        Ok(())
    }
}

/// A namespace with an events' backends Secret pointing at `scope`'s database and Kafka.
async fn events_namespace(admin: &Client, prefix: &str, scope: &Scope) -> anyhow::Result<String> {
    let namespace = unique(prefix);
    create_namespace(admin, &namespace).await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "couponrush-backends"},
        "stringData": {
            "REDIS_URL": scope.env.redis_url,
            "DATABASE_URL": scope.database_url,
            "KAFKA_BROKERS": scope.env.kafka_brokers,
            "JWT_HS256_SECRET": couponrush_e2e::JWT_SECRET,
        }
    }))?;
    Api::<Secret>::namespaced(admin.clone(), &namespace).create(&PostParams::default(), &secret).await?;
    Ok(namespace)
}

fn event(name: &str, stock: u32, starts_in: Duration) -> anyhow::Result<CouponEvent> {
    couponrush_e2e::coupon_event(name, stock, starts_in, "2s", 2_000)
}

async fn wait_for_phase(api: &Api<CouponEvent>, name: &str, phase: Phase, within: Duration) -> anyhow::Result<()> {
    wait_until(&format!("{name} to be {phase:?}"), within, || async {
        Ok(api.get(name).await?.status.is_some_and(|s| s.phase == phase))
    })
    .await
}

/// An issuer and a consumer started as the operator's Deployments say: the topic from
/// the issuer's environment, the backends from `scope` (the Secret's values).
async fn start_workloads(
    admin: &Client,
    namespace: &str,
    event: &str,
    scope: &Scope,
) -> anyhow::Result<(Service, Service)> {
    let issuer = Api::<Deployment>::namespaced(admin.clone(), namespace).get(&format!("{event}-issuer")).await?;
    let container = issuer.spec.and_then(|s| s.template.spec).map(|p| p.containers[0].clone()).context("container")?;
    let topic = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "KAFKA_TOPIC")
        .and_then(|e| e.value.clone())
        .context("KAFKA_TOPIC")?;
    let mut scope = scope.clone();
    scope.topic = topic.clone();
    let backends = Backends { kafka_topic: topic, ..scope.backends() };
    let serve = ServeConfig { jwt_hs256_secret: Some(couponrush_e2e::JWT_SECRET.to_owned()), ..ServeConfig::default() };
    let issuer = scope.start_issuer_with(backends, serve).await?;
    let consumer = scope.start_consumer().await?;
    Ok((issuer, consumer))
}

/// The reasons of the Events the operator recorded about `name`, as the admin reads them.
async fn recorded(admin: &Client, namespace: &str, name: &str) -> anyhow::Result<BTreeSet<String>> {
    let events = Api::<Event>::namespaced(admin.clone(), namespace).list(&ListParams::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}

/// One event from Warming to Completed, then deleted, with the operator as the chart's
/// ServiceAccount. `watch`: the chart's watchNamespaces (empty: cluster-wide).
async fn an_event_end_to_end(name: &str, watched: bool) -> anyhow::Result<()> {
    let admin = admin().await?;
    prepare(&admin).await?;
    let scope = Scope::new(name).await?;
    let namespace = events_namespace(&admin, name, &scope).await?;
    let watch = if watched { vec![namespace.clone()] } else { Vec::new() };
    let values: Vec<String> = watch.iter().map(|ns| format!("watchNamespaces={{{ns}}}")).collect();
    let installed = install(&admin, &unique("rbac"), &values).await?;
    // With watchNamespaces, an event elsewhere must stay untouched.
    let elsewhere = if watched { Some(events_namespace(&admin, "unwatched", &scope).await?) } else { None };
    if let Some(elsewhere) = &elsewhere {
        Api::<CouponEvent>::namespaced(admin.clone(), elsewhere)
            .create(&PostParams::default(), &event("ignored", 10, Duration::from_secs(8))?)
            .await?;
    }

    let operator = start_operator(&installed, &watch).await?;
    let api: Api<CouponEvent> = Api::namespaced(admin.clone(), &namespace);
    let stock = 100;
    api.create(&PostParams::default(), &event("opening-day", stock, Duration::from_secs(8))?).await?;
    wait_for_phase(&api, "opening-day", Phase::Warming, Duration::from_secs(30)).await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    wait_until("issuer pods available", Duration::from_secs(150), || async {
        let status = deployments.get("opening-day-issuer").await?.status;
        Ok(status.and_then(|s| s.available_replicas).is_some_and(|n| n >= 1))
    })
    .await?;
    wait_for_phase(&api, "opening-day", Phase::Live, Duration::from_secs(30)).await?;
    let (issuer, consumer) = start_workloads(&admin, &namespace, "opening-day", &scope).await?;
    let round = couponrush_core::event::EventId::new(&namespace, "opening-day")?.round(1);
    let tally = Spike { users: 600, requests_per_user: 2, concurrency: 32 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(tally.server_errors(), 0);
    wait_for_phase(&api, "opening-day", Phase::Completed, Duration::from_secs(60)).await?;
    let status = api.get("opening-day").await?.status.context("status")?;
    assert_eq!((status.issued, status.persisted, status.remaining), (Some(stock), Some(stock), Some(0)));
    // Torn down (deletes of the Deployments, the Service and the PodDisruptionBudget).
    wait_until("the workloads removed", Duration::from_secs(15), || async {
        Ok(deployments.get_opt("opening-day-issuer").await?.is_none()
            && deployments.get_opt("opening-day-consumer").await?.is_none())
    })
    .await?;
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&scope.pool().await?, &round).await?)?;
    // Its Events were recorded (a refused create is only logged by the operator).
    let reasons = recorded(&admin, &namespace, "opening-day").await?;
    for reason in ["Warming", "Live", "Completed"] {
        assert!(reasons.contains(reason), "no {reason} Event: {reasons:?}");
    }
    // Deleting it: the operator's finalizer runs and is removed.
    api.delete("opening-day", &DeleteParams::default()).await?;
    wait_until("the event deleted", Duration::from_secs(30), || async {
        Ok(api.get_opt("opening-day").await?.is_none())
    })
    .await?;
    if let Some(elsewhere) = &elsewhere {
        let ignored = Api::<CouponEvent>::namespaced(admin.clone(), elsewhere).get("ignored").await?;
        assert!(ignored.status.is_none() && ignored.finalizers().is_empty(), "{ignored:?}");
        assert!(recorded(&admin, elsewhere, "ignored").await?.is_empty());
    }

    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}

#[tokio::test]
async fn the_operator_runs_an_event_as_its_service_account_cluster_wide() -> anyhow::Result<()> {
    an_event_end_to_end("rbac-all", false).await
}

#[tokio::test]
async fn the_operator_runs_an_event_as_its_service_account_in_its_watched_namespace() -> anyhow::Result<()> {
    an_event_end_to_end("rbac-watched", true).await
}

fn status_code(result: Result<impl std::fmt::Debug, kube::Error>) -> anyhow::Result<u16> {
    match result {
        Err(kube::Error::Api(status)) => Ok(status.code),
        other => bail!("wanted an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn with_watch_namespaces_it_is_refused_secrets_elsewhere() -> anyhow::Result<()> {
    let admin = admin().await?;
    prepare(&admin).await?;
    let scope = Scope::new("rbac-secrets").await?;
    let watched = events_namespace(&admin, "watched", &scope).await?;
    let other = events_namespace(&admin, "other", &scope).await?;
    let installed = install(&admin, &unique("rbac"), &[format!("watchNamespaces={{{watched}}}")]).await?;
    let secrets = |namespace: &str| Api::<Secret>::namespaced(installed.operator.clone(), namespace);

    // Its own namespace's backends Secret it reads.
    secrets(&watched).get("couponrush-backends").await.context("reading the watched namespace's Secret")?;
    // The same Secret next door, and anything in kube-system: 403 from the apiserver
    // (authorization comes before the lookup, so a name that does not exist is 403 too).
    assert_eq!(status_code(secrets(&other).get("couponrush-backends").await)?, 403);
    assert_eq!(status_code(secrets("kube-system").get("any-secret").await)?, 403);
    assert_eq!(status_code(secrets(&watched).list(&ListParams::default()).await)?, 403, "listing Secrets");
    // Nor can it see the events, or anything else, cluster-wide.
    let all_events = Api::<CouponEvent>::all(installed.operator.clone());
    assert_eq!(status_code(all_events.list(&ListParams::default()).await)?, 403);
    let other_events = Api::<CouponEvent>::namespaced(installed.operator.clone(), &other);
    assert_eq!(status_code(other_events.list(&ListParams::default()).await)?, 403);
    let all_deployments = Api::<Deployment>::all(installed.operator.clone());
    assert_eq!(status_code(all_deployments.list(&ListParams::default()).await)?, 403);
    Ok(())
}

/// charts/couponrush/rbac-expected.txt: what the ServiceAccount may do, per install mode
/// and namespace.
#[tokio::test]
async fn its_grants_match_the_committed_expectation() -> anyhow::Result<()> {
    let admin = admin().await?;
    prepare(&admin).await?;
    let scope = Scope::new("rbac-grants").await?;
    let events = events_namespace(&admin, "events", &scope).await?;
    // What any authenticated client may do (discovery, reviewing itself): a ServiceAccount
    // with no binding at all. The chart's sections list only what it adds to this.
    let installed = install(&admin, &unique("rbac"), &[]).await?;
    let nobody: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "nobody"}}))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), &installed.namespace)
        .create(&PostParams::default(), &nobody)
        .await?;
    let baseline = grants(&client_as(&admin, &installed.namespace, "nobody").await?, &events).await?;
    let beyond = |granted: Vec<String>| granted.into_iter().filter(|line| !baseline.contains(line));

    let mut report = vec![
        "# What the chart's ServiceAccount may do, as the apiserver reports it (SelfSubjectRulesReview,".to_owned(),
        "# like `kubectl auth can-i --list`), beyond what every authenticated client may. Checked by".to_owned(),
        "# e2e/tests/rbac.rs; after changing templates/rbac.yaml rewrite it with UPDATE_RBAC_EXPECTED=1".to_owned(),
        "# and review the diff.".to_owned(),
        String::new(),
        "## watchNamespaces empty (cluster-wide)".to_owned(),
        "### in any namespace".to_owned(),
    ];
    report.extend(beyond(grants(&installed.operator, &events).await?));
    report.push("### in the release namespace".to_owned());
    report.extend(beyond(grants(&installed.operator, &installed.namespace).await?));

    let watched = events_namespace(&admin, "watched", &scope).await?;
    let installed = install(&admin, &unique("rbac"), &[format!("watchNamespaces={{{watched}}}")]).await?;
    report.push(String::new());
    report.push("## watchNamespaces: [a namespace]".to_owned());
    report.push("### in a watched namespace".to_owned());
    report.extend(beyond(grants(&installed.operator, &watched).await?));
    report.push("### in any other namespace (nothing)".to_owned());
    report.extend(beyond(grants(&installed.operator, &events).await?));
    report.push("### in the release namespace".to_owned());
    report.extend(beyond(grants(&installed.operator, &installed.namespace).await?));

    report.push(String::new());
    report
        .push("## every authenticated client, the chart's ServiceAccount included (not the chart's doing)".to_owned());
    report.extend(baseline.iter().cloned());
    let actual = report.join("\n") + "\n";

    let path = repo().join("charts/couponrush/rbac-expected.txt");
    if std::env::var_os("UPDATE_RBAC_EXPECTED").is_some() {
        std::fs::write(&path, &actual)?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    if expected != actual {
        bail!(
            "the ServiceAccount's grants differ from charts/couponrush/rbac-expected.txt \
             (- expected, + granted now; UPDATE_RBAC_EXPECTED=1 rewrites the file):\n{}",
            diff(&expected, &actual)
        );
    }
    Ok(())
}

/// A line diff of `old` and `new` (longest common subsequence): unchanged lines with two
/// spaces, removed ones with `- `, added ones with `+ `.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || common[i][j + 1] >= common[i + 1][j]) {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", a[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn the_diff_marks_removed_and_added_lines() {
    let old = "a\nsecrets get\nc\n";
    let new = "a\nsecrets get list\nc\nnodes list\n";
    assert_eq!(diff(old, new), "  a\n+ secrets get list\n- secrets get\n  c\n+ nodes list\n");
}
