//! A real kube-rs 5 client, watcher and reflector against the fake apiserver, in-process and
//! over TCP through a written kubeconfig.
// Whole-process tests time real processes on the real clocks (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use kube_dns_test_support::objects::{endpoint, endpoint_slice, service};
use kube_dns_test_support::{FakeApiServer, write_kubeconfig};

/// Polls until `check` holds (watch delivery is asynchronous), failing after five seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted_names(store: &reflector::Store<Service>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().map(|s| s.name_any()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflector_follows_changes_and_relists_after_an_expired_watch() {
    let fake = FakeApiServer::new();
    fake.set_bookmark_interval(Duration::from_millis(200));
    for name in ["a", "b", "c", "d", "e"] {
        fake.apply(service("default", name).cluster_ip("10.0.0.1").build());
    }
    let client = Client::new(fake.router(), "default");
    let (store, writer) = reflector::store::<Service>();
    let stream = watcher(
        Api::<Service>::all(client),
        watcher::Config::default().page_size(2),
    )
    .default_backoff()
    .reflect(writer);
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready())
        .await
        .expect("store ready in time")
        .expect("writer alive");
    assert_eq!(sorted_names(&store), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        fake.list_count("services"),
        3,
        "five objects in pages of two"
    );

    fake.apply(
        service("kube-system", "kube-dns")
            .cluster_ip("10.0.0.10")
            .build(),
    );
    assert!(fake.delete("Service", "default", "a"));
    eventually("live events", || {
        sorted_names(&store) == ["b", "c", "d", "e", "kube-dns"]
    })
    .await;

    // History lost while the watch is cut: the re-watch gets 410 and the watcher relists, so an
    // object deleted meanwhile disappears without any DELETED event.
    fake.compact();
    assert!(fake.delete("Service", "default", "b"));
    fake.compact();
    let lists_before = fake.list_count("services");
    fake.expire_watches();
    eventually("relist after 410", || {
        fake.list_count("services") > lists_before
            && sorted_names(&store) == ["c", "d", "e", "kube-dns"]
    })
    .await;
    fake.apply(service("default", "f").build());
    eventually("events after the relist", || store.state().len() == 5).await;

    // A dropped stream is resumed by a new watch from the last resourceVersion.
    let watches = fake.watch_count("services");
    fake.drop_streams();
    eventually("a new watch after the dropped stream", || {
        fake.watch_count("services") > watches
    })
    .await;
    fake.apply(service("default", "g").build());
    eventually("events after a dropped stream", || store.state().len() == 6).await;
    task.abort();
}

#[tokio::test]
async fn kube_client_reaches_the_fake_over_tcp_through_a_written_kubeconfig() {
    let fake = FakeApiServer::new();
    fake.apply(
        endpoint_slice("default", "web-1", "web")
            .endpoint(endpoint(&["10.1.0.1"]).hostname("web-0"))
            .port(Some("http"), 80, "TCP")
            .build(),
    );
    fake.apply(
        endpoint_slice("default", "db-1", "db")
            .endpoint(endpoint(&["10.1.0.2"]))
            .build(),
    );
    let (addr, server) = fake
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let path = std::env::temp_dir().join(format!(
        "kube-dns-test-support-kubeconfig-{}",
        std::process::id()
    ));
    write_kubeconfig(&path, &format!("http://{addr}")).expect("write kubeconfig");

    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let _ = std::fs::remove_file(&path);
    let client = Client::try_from(config).expect("client");
    let info = client.apiserver_version().await.expect("version");
    assert_eq!(info.minor, "33");

    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let web = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("list");
    assert_eq!(web.items.len(), 1);
    assert_eq!(web.items[0].endpoints[0].hostname.as_deref(), Some("web-0"));
    let one = Api::<EndpointSlice>::namespaced(client, "default")
        .get("db-1")
        .await
        .expect("get");
    assert_eq!(one.address_type, "IPv4");
    server.abort();
}
