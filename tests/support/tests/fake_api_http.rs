//! The fake apiserver over real HTTP: paging, selectors, watch replay and live events,
//! in-stream 410, bookmarks, writes and fault injection.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use kube_dns_test_support::FakeApiServer;
use kube_dns_test_support::http_client::{self, LineStream};
use kube_dns_test_support::objects::{config_map, endpoint, endpoint_slice, service};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

async fn serve(fake: &FakeApiServer) -> SocketAddr {
    fake.serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve")
        .0
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let resp = http_client::get(addr, path).await.expect("GET");
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
    resp.json().expect("json")
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().expect("ns"),
                i["metadata"]["name"].as_str().expect("name")
            )
        })
        .collect()
}

async fn next_event(stream: &mut LineStream) -> (String, Value) {
    let event = stream
        .next_json(WAIT)
        .await
        .expect("event")
        .expect("stream still open");
    (
        event["type"].as_str().expect("type").to_owned(),
        event["object"].clone(),
    )
}

#[tokio::test]
async fn list_pages_in_namespace_name_order_with_one_resource_version() {
    let fake = FakeApiServer::new();
    for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y"), ("c", "w"), ("a", "x")] {
        fake.apply(service(ns, name).cluster_ip("10.0.0.1").build());
    }
    fake.apply(config_map("a", "not-a-service", &[]));
    let addr = serve(&fake).await;

    let mut seen = Vec::new();
    let mut path = "/api/v1/services?limit=2".to_owned();
    let mut versions = Vec::new();
    loop {
        let page = get_json(addr, &path).await;
        assert_eq!(page["kind"], "ServiceList");
        assert_eq!(page["apiVersion"], "v1");
        assert!(names(&page).len() <= 2);
        assert!(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|i| i["kind"] == "Service" && i["apiVersion"] == "v1")
        );
        seen.extend(names(&page));
        versions.push(
            page["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .to_owned(),
        );
        // Changes between pages must not move the list's resourceVersion.
        fake.apply(config_map("a", "churn", &[]));
        match page["metadata"]["continue"].as_str() {
            Some(token) => path = format!("/api/v1/services?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(seen, ["a/x", "a/y", "a/z", "b/x", "c/w"]);
    assert_eq!(versions.len(), 3);
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    assert_eq!(fake.list_count("services"), 3);

    let namespaced = get_json(addr, "/api/v1/namespaces/a/services").await;
    assert_eq!(names(&namespaced), ["a/x", "a/y", "a/z"]);
    assert_eq!(
        names(&get_json(addr, "/api/v1/services?fieldSelector=metadata.name%3Dx").await),
        ["a/x", "b/x"]
    );
    assert_eq!(
        names(
            &get_json(
                addr,
                "/api/v1/services?fieldSelector=metadata.name%3Dx,metadata.namespace%3Db"
            )
            .await
        ),
        ["b/x"]
    );
}

#[tokio::test]
async fn label_selectors_filter_endpoint_slices_in_the_discovery_group() {
    let fake = FakeApiServer::new();
    fake.apply(
        endpoint_slice("default", "web-1", "web")
            .endpoint(endpoint(&["10.1.0.1"]))
            .build(),
    );
    fake.apply(
        endpoint_slice("default", "db-1", "db")
            .endpoint(endpoint(&["10.1.0.2"]))
            .build(),
    );
    fake.apply(
        endpoint_slice("other", "orphan", "none")
            .without_label(kube_dns_test_support::objects::SERVICE_NAME_LABEL)
            .build(),
    );
    let addr = serve(&fake).await;
    let all = get_json(addr, "/apis/discovery.k8s.io/v1/endpointslices").await;
    assert_eq!(all["kind"], "EndpointSliceList");
    assert_eq!(all["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(
        names(&all),
        ["default/db-1", "default/web-1", "other/orphan"]
    );
    let owned = get_json(
        addr,
        "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name",
    )
    .await;
    assert_eq!(names(&owned), ["default/db-1", "default/web-1"]);
    let web = get_json(addr, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb").await;
    assert_eq!(names(&web), ["default/web-1"]);
    let not_web = get_json(addr, "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name!%3Dweb").await;
    assert_eq!(names(&not_web), ["default/db-1", "other/orphan"]);
    // EndpointSlices are not served by the core group, nor services by discovery.
    assert_eq!(
        http_client::get(addr, "/api/v1/endpointslices")
            .await
            .expect("GET")
            .status,
        404
    );
    assert_eq!(
        http_client::get(addr, "/apis/discovery.k8s.io/v1/services")
            .await
            .expect("GET")
            .status,
        404
    );
}

#[tokio::test]
async fn watch_replays_events_after_its_resource_version_then_streams_live_ones() {
    let fake = FakeApiServer::new();
    fake.apply(service("default", "old").cluster_ip("10.0.0.9").build());
    let from = fake.apply(service("default", "a").cluster_ip("10.0.0.1").build());
    fake.apply(service("default", "b").cluster_ip("10.0.0.2").build());
    fake.apply(service("default", "a").cluster_ip("10.0.0.3").build());
    fake.apply(config_map("default", "unrelated", &[]));
    assert!(fake.delete("Service", "default", "b"));
    let addr = serve(&fake).await;

    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={from}"),
    )
    .await
    .expect("watch");
    assert_eq!(watch.status, 200);
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("b"))
    );
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(
        (t.as_str(), o["spec"]["clusterIP"].as_str()),
        ("MODIFIED", Some("10.0.0.3"))
    );
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("DELETED", Some("b"))
    );
    assert_eq!(
        o["metadata"]["resourceVersion"],
        fake.resource_version().to_string()
    );

    let rv = fake.apply(
        service("kube-system", "live")
            .cluster_ip("10.0.0.10")
            .build(),
    );
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("live"))
    );
    assert_eq!(o["metadata"]["resourceVersion"], rv.to_string());
    assert_eq!(o["kind"], "Service");
    assert_eq!(fake.watch_count("Service"), 1);
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_the_current_objects() {
    let fake = FakeApiServer::new();
    fake.apply(service("ns1", "a").build());
    fake.apply(service("ns2", "b").build());
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(addr, "/api/v1/namespaces/ns2/services?watch=1")
        .await
        .expect("watch");
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("b"))
    );
    fake.apply(service("ns1", "c").build());
    fake.apply(service("ns2", "d").build());
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("d"))
    );
}

#[tokio::test]
async fn selector_watch_sees_objects_leave_and_enter_the_selection() {
    let fake = FakeApiServer::new();
    let rv = fake.apply(service("default", "s").label("tier", "front").build());
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}&labelSelector=tier%3Dfront"),
    )
    .await
    .expect("watch");
    fake.apply(service("default", "s").label("tier", "back").build());
    fake.apply(service("default", "s").label("tier", "front").build());
    assert_eq!(next_event(&mut watch).await.0, "DELETED");
    assert_eq!(next_event(&mut watch).await.0, "ADDED");
}

#[tokio::test]
async fn expire_watches_sends_an_in_stream_410_and_ends_the_stream() {
    let fake = FakeApiServer::new();
    let rv = fake.apply(service("default", "a").build());
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
    )
    .await
    .expect("watch");
    // Make sure the watch is registered before expiring.
    fake.apply(service("default", "b").build());
    assert_eq!(next_event(&mut watch).await.0, "ADDED");
    fake.expire_watches();
    let (t, status) = next_event(&mut watch).await;
    assert_eq!(t, "ERROR");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert_eq!(
        watch.status, 200,
        "410 must be in-stream, not an HTTP status"
    );
    assert!(watch.next_line(WAIT).await.expect("clean end").is_none());
}

#[tokio::test]
async fn watch_from_a_compacted_or_evicted_version_gets_410() {
    let fake = FakeApiServer::new();
    let old = fake.apply(service("default", "a").build());
    fake.apply(service("default", "b").build());
    fake.compact();
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={old}"),
    )
    .await
    .expect("watch");
    let (t, status) = next_event(&mut watch).await;
    assert_eq!((t.as_str(), status["code"].as_u64()), ("ERROR", Some(410)));
    assert!(watch.next_line(WAIT).await.expect("clean end").is_none());

    // A watch from the current version after compaction is fine.
    let now = fake.resource_version();
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={now}"),
    )
    .await
    .expect("watch");
    fake.apply(service("default", "c").build());
    assert_eq!(next_event(&mut watch).await.0, "ADDED");

    // Eviction from a small log has the same effect as compaction.
    fake.set_event_log_capacity(2);
    let before = fake.resource_version();
    for name in ["d", "e", "f"] {
        fake.apply(service("default", name).build());
    }
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={before}"),
    )
    .await
    .expect("watch");
    assert_eq!(next_event(&mut watch).await.1["code"], 410);
}

#[tokio::test]
async fn drop_streams_cuts_watches_off_without_an_event() {
    let fake = FakeApiServer::new();
    let rv = fake.apply(service("default", "a").build());
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}"),
    )
    .await
    .expect("watch");
    fake.apply(service("default", "b").build());
    assert_eq!(next_event(&mut watch).await.0, "ADDED");
    fake.drop_streams();
    assert!(
        watch.next_line(WAIT).await.is_err(),
        "the body must end abruptly, without a final chunk"
    );
}

#[tokio::test]
async fn hang_watches_leaves_streams_open_and_silent_past_their_timeout() {
    let fake = FakeApiServer::new();
    fake.set_bookmark_interval(Duration::from_millis(100));
    let rv = fake.apply(service("default", "a").build());
    let addr = serve(&fake).await;
    let path = format!(
        "/api/v1/services?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"
    );
    let mut hung = http_client::stream_lines(addr, &path).await.expect("watch");
    assert_eq!(next_event(&mut hung).await.0, "BOOKMARK");
    fake.hang_watches();
    // Let the hang reach the stream before the change is broadcast.
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.apply(service("default", "b").build());
    // No event, no bookmark, and no clean end at timeoutSeconds=1: only silence.
    let silence = hung.next_line(Duration::from_millis(2500)).await;
    assert!(
        silence
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("no line within")),
        "a hung watch must stay open and silent: {silence:?}"
    );
    // A new watch from the same version gets what the hung one lost.
    let mut fresh = http_client::stream_lines(addr, &path).await.expect("watch");
    let (t, o) = next_event(&mut fresh).await;
    assert_eq!(t, "ADDED");
    assert_eq!(o["metadata"]["name"], "b");
}

#[tokio::test]
async fn max_page_caps_pages_below_the_clients_limit() {
    let fake = FakeApiServer::new();
    for i in 0..7 {
        fake.apply(service("default", &format!("s{i}")).build());
    }
    fake.set_max_page(3);
    let addr = serve(&fake).await;
    for first in ["/api/v1/services?limit=500", "/api/v1/services"] {
        let mut path = first.to_owned();
        let mut sizes = Vec::new();
        loop {
            let page = get_json(addr, &path).await;
            sizes.push(names(&page).len());
            match page["metadata"]["continue"].as_str() {
                Some(token) => path = format!("/api/v1/services?limit=500&continue={token}"),
                None => break,
            }
        }
        assert_eq!(sizes, [3, 3, 1], "{first}");
    }
}

#[tokio::test]
async fn bookmarks_carry_the_kind_and_current_resource_version() {
    let fake = FakeApiServer::new();
    fake.set_bookmark_interval(Duration::from_millis(100));
    let rv = fake.apply(endpoint_slice("default", "s", "svc").build());
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
    )
    .await
    .expect("watch");
    let later = fake.apply(config_map("default", "other-resource", &[]));
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(t, "BOOKMARK");
    assert_eq!(o["kind"], "EndpointSlice");
    assert_eq!(o["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(o["metadata"]["resourceVersion"], later.to_string());
}

#[tokio::test]
async fn streaming_list_sends_current_objects_then_an_initial_events_end_bookmark() {
    let fake = FakeApiServer::new();
    fake.apply(service("default", "a").build());
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(
        addr,
        "/api/v1/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
    )
    .await
    .expect("watch");
    assert_eq!(next_event(&mut watch).await.0, "ADDED");
    let (t, o) = next_event(&mut watch).await;
    assert_eq!(t, "BOOKMARK");
    assert_eq!(
        o["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn watch_ends_cleanly_after_timeout_seconds() {
    let fake = FakeApiServer::new();
    let addr = serve(&fake).await;
    let mut watch = http_client::stream_lines(addr, "/api/v1/pods?watch=true&timeoutSeconds=1")
        .await
        .expect("watch");
    let started = std::time::Instant::now();
    assert!(watch.next_line(WAIT).await.expect("clean end").is_none());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn writes_over_http_create_replace_and_delete_with_kubernetes_status_codes() {
    let fake = FakeApiServer::new();
    let addr = serve(&fake).await;
    // resourceVersion 0 would mean "start from the current state", so start from a real one.
    let rv0 = fake.apply(kube_dns_test_support::objects::pod(
        "default",
        "before",
        "10.1.0.1",
        &[],
    ));
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-dns"}, "data": {"a": "1"}});

    let created = http_client::request(
        addr,
        "POST",
        "/api/v1/namespaces/kube-system/configmaps",
        Some(&cm),
    )
    .await
    .expect("POST");
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json().expect("json");
    assert_eq!(created["metadata"]["namespace"], "kube-system");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());

    let again = http_client::request(
        addr,
        "POST",
        "/api/v1/namespaces/kube-system/configmaps",
        Some(&cm),
    )
    .await
    .expect("POST");
    assert_eq!(again.status, 409);
    assert_eq!(again.json().expect("status")["reason"], "AlreadyExists");

    let mut replacement = created.clone();
    replacement["data"]["a"] = "2".into();
    let replaced = http_client::request(
        addr,
        "PUT",
        "/api/v1/namespaces/kube-system/configmaps/kube-dns",
        Some(&replacement),
    )
    .await
    .expect("PUT");
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    let replaced = replaced.json().expect("json");
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    assert_ne!(
        replaced["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    // PUT with a stale resourceVersion conflicts.
    let stale = http_client::request(
        addr,
        "PUT",
        "/api/v1/namespaces/kube-system/configmaps/kube-dns",
        Some(&replacement),
    )
    .await
    .expect("PUT");
    assert_eq!(stale.status, 409);

    let fetched = get_json(addr, "/api/v1/namespaces/kube-system/configmaps/kube-dns").await;
    assert_eq!(fetched["data"]["a"], "2");
    assert_eq!(
        fake.get("configmaps", "kube-system", "kube-dns")
            .expect("stored")["data"]["a"],
        "2"
    );

    let put_new = http_client::request(
        addr,
        "PUT",
        "/api/v1/namespaces/default/pods/p",
        Some(&json!({"metadata": {}})),
    )
    .await
    .expect("PUT");
    assert_eq!(put_new.status, 201, "{}", put_new.text());
    assert_eq!(put_new.json().expect("json")["kind"], "Pod");

    let deleted = http_client::request(
        addr,
        "DELETE",
        "/api/v1/namespaces/kube-system/configmaps/kube-dns",
        None,
    )
    .await
    .expect("DELETE");
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.json().expect("json")["metadata"]["name"],
        "kube-dns"
    );
    let gone = http_client::request(
        addr,
        "DELETE",
        "/api/v1/namespaces/kube-system/configmaps/kube-dns",
        None,
    )
    .await
    .expect("DELETE");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json().expect("status")["kind"], "Status");
    assert_eq!(
        http_client::get(addr, "/api/v1/namespaces/kube-system/configmaps/kube-dns")
            .await
            .expect("GET")
            .status,
        404
    );

    let wrong_kind = http_client::request(
        addr,
        "POST",
        "/api/v1/namespaces/default/services",
        Some(&cm),
    )
    .await
    .expect("POST");
    assert_eq!(wrong_kind.status, 400);

    // Every write is visible to a watch from before them.
    let mut watch = http_client::stream_lines(
        addr,
        &format!("/api/v1/configmaps?watch=true&resourceVersion={rv0}"),
    )
    .await
    .expect("watch");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_event(&mut watch).await.0);
    }
    assert_eq!(got, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn fault_hooks_fail_lists_delay_responses_and_make_the_server_unavailable() {
    let fake = FakeApiServer::new();
    let addr = serve(&fake).await;
    fake.fail_next_lists(2);
    for _ in 0..2 {
        let failed = http_client::get(addr, "/api/v1/services")
            .await
            .expect("GET");
        assert_eq!(failed.status, 500);
        assert_eq!(failed.json().expect("status")["kind"], "Status");
    }
    assert_eq!(
        http_client::get(addr, "/api/v1/services")
            .await
            .expect("GET")
            .status,
        200
    );
    assert_eq!(fake.list_count("services"), 3);

    fake.set_unavailable(true);
    assert_eq!(
        http_client::get(addr, "/api/v1/services")
            .await
            .expect("GET")
            .status,
        503
    );
    assert_eq!(
        http_client::get(addr, "/version")
            .await
            .expect("GET")
            .status,
        503
    );
    fake.set_unavailable(false);
    assert_eq!(
        http_client::get(addr, "/api/v1/services")
            .await
            .expect("GET")
            .status,
        200
    );

    fake.set_delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(
        http_client::get(addr, "/api/v1/pods")
            .await
            .expect("GET")
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        fake.requests().iter().any(|r| r == "GET /api/v1/pods"),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn version_and_discovery_documents_are_served() {
    let fake = FakeApiServer::new();
    let addr = serve(&fake).await;
    assert_eq!(get_json(addr, "/version").await["major"], "1");
    assert_eq!(get_json(addr, "/api").await["versions"][0], "v1");
    assert_eq!(
        get_json(addr, "/apis").await["groups"][0]["name"],
        "discovery.k8s.io"
    );
    let core = get_json(addr, "/api/v1").await;
    let names: Vec<&str> = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["services", "endpoints", "configmaps", "pods"]);
    assert_eq!(
        get_json(addr, "/apis/discovery.k8s.io/v1").await["resources"][0]["kind"],
        "EndpointSlice"
    );
    assert_eq!(
        http_client::get(addr, "/apis/apps/v1/deployments")
            .await
            .expect("GET")
            .status,
        404
    );
}

#[test]
fn yaml_clusters_load_from_documents_and_lists() {
    let fake = FakeApiServer::new();
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.0.0.1, ports: [{name: https, port: 443, protocol: TCP}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: kubernetes
    namespace: default
    labels: {kubernetes.io/service-name: kubernetes}
  addressType: IPv4
  endpoints: [{addresses: ["192.168.0.10"]}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: kube-dns, namespace: kube-system}
  data: {stubDomains: '{"acme.local": ["1.2.3.4"]}'}
---
"#;
    assert_eq!(fake.load_yaml_str(yaml).expect("load"), 3);
    let svc = fake
        .get("Service", "default", "kubernetes")
        .expect("service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["clusterIP"], "10.0.0.1");
    assert_eq!(fake.objects("endpointslices").len(), 1);
    assert!(
        fake.get("configmap", "kube-system", "kube-dns")
            .expect("cm")["data"]["stubDomains"]
            .is_string()
    );

    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    assert!(fake.load_yaml_str(bad).is_err());
    assert!(
        fake.load_yaml_file(kube_dns_test_support::fixtures_dir().join("no-such-file.yaml"))
            .is_err()
    );
}
