//! Identities end to end (issue 6, point 1): every connection is TLS and every caller is
//! named by a certificate from the cluster CA or a token an administrator issued. Real
//! `ctld`, `noded` and CLI binaries, and raw gRPC clients where a test plays a dishonest
//! node or a stranger.
//!
//! ```text
//!   chorus up ──▶ CA, admin certificate, join token per node (op<N>) ──▶ ctld + noded (mTLS)
//!   tests: no credential · a wrong one · another user's job · another operator's node ·
//!          a node speaking for another · a node without a valid join token · the peer API
//! ```

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chorus_integration::{Cluster, ClusterOpts};
use chorus_proto::client::{self as pb, client_client::ClientClient};
use chorus_proto::node::{self as pn, node_service_client::NodeServiceClient};
use chorus_proto::peer::{self as pp, peer_client::PeerClient};
use chorus_proto::tls::{self, Ca};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig};

const MIN: Duration = Duration::from_secs(60);

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails with exit code 1 and says `what`.
fn refused(o: Output, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(what), "expected `{what}` in: {}", text(&o));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn ca_pem(c: &Cluster) -> String {
    std::fs::read_to_string(c.ca_dir().join(tls::CA_CERT)).unwrap()
}

/// A raw channel to `addr`, trusting the cluster CA and showing `identity` (if any).
async fn channel(addr: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    tls::endpoint(addr, &tls)?.connect().await
}

/// Node `name`'s own TLS: the certificate its join gave it and its ed25519 key.
fn node_tls(c: &Cluster, name: &str) -> ClientTlsConfig {
    let keys = c.node_dir(name).join("keys");
    let cert = std::fs::read_to_string(keys.join("node.crt")).unwrap();
    let seed: [u8; 32] = std::fs::read(keys.join("node.key")).unwrap().try_into().unwrap();
    tls::client_tls(&ca_pem(c), Some((&cert, &tls::ed25519_key_pem(&seed).unwrap())))
}

/// A user's TLS, from the files `chorus user cert` wrote for `name`.
fn user_tls(c: &Cluster, name: &str) -> ClientTlsConfig {
    let dir = c.dir.path().join("users").join(name);
    let cert = std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap();
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap();
    tls::client_tls(&ca_pem(c), Some((&cert, &key)))
}

#[test]
fn a_client_without_credentials_or_with_wrong_ones_is_refused_saying_why() {
    let c = Cluster::start(ClusterOpts { nodes: 1, ..Default::default() });
    // The CLI says what is missing before it connects.
    let none = c.conf_with("none.toml", "");
    refused(c.run_as(&none, "squeue", &[]), "no `ca`");
    let ca = c.ca_dir().join(tls::CA_CERT);
    let bare = c.conf_with("bare.toml", &format!("ca = \"{}\"\n", ca.display()));
    let o = c.run_as(&bare, "sbatch", &["--wrap", "true"]);
    refused(o, "no credentials");
    refused(c.run_as(&bare, "scancel", &["1"]), "chorus user cert");

    // The controller says it too, to a client that brings TLS and nothing else.
    let addr = c.controllers()[0].1.clone();
    let e = runtime().block_on(async {
        let ch = channel(&addr, tls::client_tls(&ca_pem(&c), None)).await.unwrap();
        ClientClient::new(ch).jobs(pb::JobsRequest::default()).await.unwrap_err()
    });
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().starts_with("no credentials"), "{}", e.message());

    // A token no one issued.
    let token = c.dir.path().join("users/bogus.token");
    tls::write_private(&token, "chorus_0123456789abcdef").unwrap();
    let lines = format!("ca = \"{}\"\ntoken_file = \"{}\"\n", ca.display(), token.display());
    let bogus = c.conf_with("bogus.toml", &lines);
    refused(c.run_as(&bogus, "squeue", &[]), "token not accepted");

    // An administrator's certificate from a CA of someone else's making.
    let other = c.dir.path().join("other-ca");
    Ca::create("chorus", 1_900_000_000).unwrap().save(&other).unwrap();
    let out = c.dir.path().join("users/mallory").display().to_string();
    let other_ca = other.display().to_string();
    let args = ["user", "cert", "mallory", "--uid", "0", "--admin", "--ca-dir", &other_ca];
    let o = c.run("chorus", &[&args[..], &["--out", &out]].concat());
    let lines = ok(o);
    let lines: String =
        lines.lines().filter(|l| !l.starts_with("ca =")).map(|l| format!("{l}\n")).collect();
    let mallory = c.conf_with("mallory.toml", &format!("ca = \"{}\"\n{lines}", ca.display()));
    let started = Instant::now();
    refused(c.run_as(&mallory, "squeue", &[]), "certificate not accepted by the controller");
    assert!(started.elapsed() < Duration::from_secs(5), "a refused certificate is not retried");
}

#[test]
fn a_user_cannot_touch_another_users_job_and_an_admin_can() {
    let c = Cluster::start(ClusterOpts { nodes: 1, ..Default::default() });
    let alice = c.user_conf("alice", 1001, &[]);
    let bob = c.user_conf("bob", 1002, &[]);
    let id =
        ok(c.run_as(&alice, "sbatch", &["--parsable", "--wrap", "sleep 300"])).trim().to_owned();
    // The job is alice's because her certificate says so (the CLI runs as root here).
    assert_eq!(ok(c.run("squeue", &["-h", "-j", &id, "-o", "%u"])).trim(), "alice");

    refused(c.run_as(&bob, "scancel", &[&id]), "Access/permission denied: job");
    refused(c.run_as(&bob, "scancel", &["-s", "USR1", &id]), "belongs to alice (uid 1001)");
    let o = c.run_as(&bob, "scontrol", &["update", &format!("JobId={id}"), "TimeLimit=5"]);
    assert!(!o.status.success() && text(&o).contains("Access/permission denied"), "{}", text(&o));
    let o = c.run_as(&bob, "chorus", &["output", &id]);
    assert!(!o.status.success() && text(&o).contains("Access/permission denied"), "{}", text(&o));
    assert!(matches!(c.state(&id).as_str(), "PENDING" | "RUNNING"), "{}", c.state(&id));
    // Reads stay open to anyone with a credential.
    assert!(ok(c.run_as(&bob, "squeue", &["-h", "-o", "%i"])).contains(&id));

    ok(c.run("scancel", &[&id]));
    assert_eq!(c.wait_done(&id, MIN), "CANCELLED");

    // A token works as well as a certificate, for its user only, until it is revoked.
    let issued = c.run("chorus", &["user", "token", "alice", "--uid", "1001", "--ttl", "1h"]);
    let secret = ok(issued.clone());
    let token_id = String::from_utf8_lossy(&issued.stderr)
        .split_whitespace()
        .nth(1)
        .expect("`token ID for ...`")
        .to_owned();
    let file = c.dir.path().join("users/alice.token");
    tls::write_private(&file, &secret).unwrap();
    let ca = c.ca_dir().join(tls::CA_CERT);
    let lines = format!("ca = \"{}\"\ntoken_file = \"{}\"\n", ca.display(), file.display());
    let by_token = c.conf_with("alice-token.toml", &lines);
    assert_eq!(
        ok(c.run_as(&by_token, "chorus", &["whoami"])).trim(),
        "alice (uid 1001, gid 1001), by token"
    );
    let mine =
        ok(c.run_as(&by_token, "sbatch", &["--parsable", "--wrap", "sleep 300"])).trim().to_owned();
    ok(c.run_as(&by_token, "scancel", &[&mine]));
    assert_eq!(c.wait_done(&mine, MIN), "CANCELLED");
    refused(c.run_as(&bob, "chorus", &["token", "revoke", &token_id]), "is for administrators");
    ok(c.run("chorus", &["token", "revoke", &token_id]));
    refused(c.run_as(&by_token, "squeue", &[]), "token not accepted");
}

#[test]
fn an_operator_acts_on_its_own_nodes_and_stake_only() {
    // Nodes left unbonded: the operators bond them here.
    let c = Cluster::start(ClusterOpts { nodes: 2, node_stake: Some(0), ..Default::default() });
    // chorus up joined node<N> under operator op<N>.
    let op1 = c.user_conf("op1", 2001, &["--operator", "op1"]);
    let alice = c.user_conf("alice", 1001, &[]);
    for op in ["op1", "op2"] {
        ok(c.run("chorus", &["operator", "deposit", op, "1000"]));
    }
    refused(
        c.run_as(&op1, "chorus", &["operator", "deposit", "op1", "5"]),
        "is for administrators",
    );
    let bond = |conf: &Path, node: &str, op: &str| {
        c.run_as(conf, "chorus", &["node", "register", node, "--operator", op, "--stake", "100"])
    };
    ok(bond(&op1, "node1", "op1"));
    refused(bond(&op1, "node2", "op1"), "node node2 is operator op2's");
    refused(bond(&op1, "node2", "op2"), "you act for operator op1, not op2");
    let o = c.run_as(
        &op1,
        "chorus",
        &["node", "unbond", "node2", "--operator", "op2", "--amount", "1"],
    );
    refused(o, "not op2");
    refused(bond(&alice, "node1", "op1"), "acts for no operator");
    let balance = ok(c.run("chorus", &["operator", "balance", "op1"]));
    assert!(balance.contains("Node=node1 Stake=100"), "{balance}");
    assert!(
        ok(c.run("chorus", &["operator", "balance", "op2"]))
            .starts_with("Operator=op2 Balance=1000 ")
    );

    // Draining: the node's operator or an administrator.
    let drain = |conf: &Path, node: &str| {
        c.run_as(
            conf,
            "scontrol",
            &["update", &format!("NodeName={node}"), "State=DRAIN", "Reason=maint"],
        )
    };
    let o = drain(&op1, "node2");
    assert!(
        !o.status.success() && text(&o).contains("node node2 is operator op2's"),
        "{}",
        text(&o)
    );
    ok(drain(&op1, "node1"));
    let reasons = ok(c.run("sinfo", &["-R", "-h", "-o", "%E|%u|%N"]));
    assert_eq!(reasons.trim(), "maint|op1|node1", "the drain is recorded as the operator's");
}

/// Runs `noded` for a node that is not in the cluster yet, and waits for it to give up.
fn lone_noded(c: &Cluster, name: &str, extra: &[&str]) -> Output {
    let state = c.dir.path().join("strangers").join(name);
    let addr = c.controllers()[0].1.clone();
    let ca = c.ca_dir().join(tls::CA_CERT);
    let mut child = Command::new(chorus_integration::bin_dir().join("noded"))
        .args(["--name", name, "--controllers", &addr, "--cgroups", "off", "--namespaces", "off"])
        .arg("--ca")
        .arg(&ca)
        .arg("--state-dir")
        .arg(&state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > MIN {
            let _ = child.kill();
            panic!("noded {name} {extra:?} still running after a minute: it joined");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_node_without_a_valid_join_token_cannot_join() {
    let c = Cluster::start(ClusterOpts { nodes: 1, ..Default::default() });
    let o = lone_noded(&c, "node7", &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no join token") && text(&o).contains("chorus operator token"),
        "{}",
        text(&o)
    );
    let o = lone_noded(&c, "node7", &["--join-token", "chorus_not-a-token"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("join refused: token not accepted"), "{}", text(&o));
    let user_token = ok(c.run("chorus", &["user", "token", "eve", "--uid", "1005"]));
    let o = lone_noded(&c, "node7", &["--join-token", user_token.trim()]);
    assert!(text(&o).contains("not a join token"), "{}", text(&o));
    // A good token for another operator cannot take a name that joined already.
    let join = ok(c.run("chorus", &["operator", "token", "op9"]));
    let o = lone_noded(&c, "node1", &["--join-token", join.trim()]);
    assert!(
        text(&o).contains("join refused: node node1 joined under operator op1"),
        "{}",
        text(&o)
    );
    let nodes = ok(c.run("sinfo", &["-h", "-N", "-o", "%N"]));
    assert_eq!(nodes.trim(), "node1", "no stranger got in");
    let log = std::fs::read_to_string(c.dir.path().join("state/log/ctld.log")).unwrap();
    assert!(log.contains("refused") && log.contains("node node7"), "refusals are logged");
}

#[test]
fn a_node_may_speak_only_for_itself() {
    let c = Cluster::start(ClusterOpts { nodes: 2, ..Default::default() });
    let addr = c.controllers()[0].1.clone();
    let rt = runtime();
    let mut n1 = rt.block_on(async {
        NodeServiceClient::new(channel(&addr, node_tls(&c, "node1")).await.unwrap())
    });
    let denied = |r: Result<(), tonic::Status>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(
            e.message().contains("may speak only for itself, not for node node2"),
            "{what}: {}",
            e.message()
        );
    };
    rt.block_on(async {
        let hb = |name: &str| pn::HeartbeatRequest { name: name.into() };
        assert!(n1.heartbeat(hb("node1")).await.unwrap().into_inner().known, "node1 as itself");
        denied(n1.heartbeat(hb("node2")).await.map(drop), "heartbeat as node2");
        let reg = pn::RegisterRequest {
            name: "node2".into(),
            cpus: 1,
            mem_mb: 100,
            ..Default::default()
        };
        denied(n1.register(reg).await.map(drop), "register as node2");
        let report = pn::JobReport { node: "node2".into(), job_id: 1, ..Default::default() };
        denied(n1.report(report).await.map(drop), "report for node2");
        let health = pn::HealthRequest { name: "node2".into(), session: 1, health: None };
        denied(n1.health(health).await.map(drop), "health of node2");
        let stream = n1.assignments(pn::AssignmentsRequest { name: "node2".into() }).await;
        denied(stream.map(drop), "node2's assignments");
    });
    // Refusals are logged, rate-limited: one line for node1's burst.
    let log = std::fs::read_to_string(c.dir.path().join("state/log/ctld.log")).unwrap();
    let lines = log.lines().filter(|l| l.contains("may speak only for itself")).count();
    assert_eq!(lines, 1, "{log}");

    // A user's certificate is no node's, and no certificate at all is no one's.
    c.user_conf("alice", 1001, &[]);
    rt.block_on(async {
        let ch = channel(&addr, user_tls(&c, "alice")).await.unwrap();
        let e = NodeServiceClient::new(ch)
            .heartbeat(pn::HeartbeatRequest { name: "node1".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("is not a node"), "{}", e.message());
        let ch = channel(&addr, tls::client_tls(&ca_pem(&c), None)).await.unwrap();
        let e = NodeServiceClient::new(ch)
            .heartbeat(pn::HeartbeatRequest { name: "node1".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    });
}

#[test]
fn the_peer_api_takes_controllers_only() {
    let c = Cluster::start(ClusterOpts { nodes: 1, ..Default::default() });
    let peer = c.controllers()[0].2.clone();
    c.user_conf("root2", 0, &["--admin"]);
    let ca = Ca::load(&c.ca_dir()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let controller = ca.issue_controller(9, &["127.0.0.1".into()], now).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let identify =
            |ch: Channel| async move { PeerClient::new(ch).identify(pp::IdentifyRequest {}).await };
        // Without a certificate, no connection: the handshake (or the first call) fails.
        let bare = match channel(&peer, tls::client_tls(&ca_pem(&c), None)).await {
            Ok(ch) => identify(ch).await.map(drop),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        assert!(bare.is_err(), "the peer API answered a client without a certificate");
        for (who, tls) in
            [("an administrator", user_tls(&c, "root2")), ("a node", node_tls(&c, "node1"))]
        {
            let e = identify(channel(&peer, tls).await.unwrap()).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
            assert!(e.message().contains("is not a controller"), "{who}: {}", e.message());
        }
        let mine = tls::client_tls(&ca_pem(&c), Some((&controller.cert_pem, &controller.key_pem)));
        let me = identify(channel(&peer, mine).await.unwrap())
            .await
            .expect("a controller's certificate");
        assert_eq!(me.into_inner().id, 1);
    });
}
