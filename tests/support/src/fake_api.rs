//! A fake Kubernetes API server over real HTTP that kube-rs clients can list, watch and write.
//!
//! The store keeps `serde_json::Value` objects keyed by (resource, namespace, name) and a global,
//! monotonic resourceVersion. Every write appends to a per-resource event log, so a watch from an
//! old resourceVersion replays what it missed; a watch from a version older than the log (or
//! after [`FakeApiServer::compact`]) gets the in-stream `ERROR` 410 event a real apiserver sends.
//! That in-stream error, not an HTTP 410, is what makes kube-runtime's watcher relist.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// Events each resource keeps for watch replay unless [`FakeApiServer::set_event_log_capacity`].
pub const DEFAULT_EVENT_LOG_CAPACITY: usize = 10_000;
/// Interval between BOOKMARK events on watches that allow them.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Annotation on the bookmark that ends the initial events of a streaming list (KEP-3157).
pub const INITIAL_EVENTS_END_ANNOTATION: &str = "k8s.io/initial-events-end";
const BROADCAST_CAPACITY: usize = 16_384;

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Services,
    Endpoints,
    ConfigMaps,
    Pods,
    EndpointSlices,
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Services,
        Resource::Endpoints,
        Resource::ConfigMaps,
        Resource::Pods,
        Resource::EndpointSlices,
    ];

    /// The plural name used in URL paths.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::Endpoints => "endpoints",
            Resource::ConfigMaps => "configmaps",
            Resource::Pods => "pods",
            Resource::EndpointSlices => "endpointslices",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Resource::Services => "service",
            Resource::Endpoints => "endpoints",
            Resource::ConfigMaps => "configmap",
            Resource::Pods => "pod",
            Resource::EndpointSlices => "endpointslice",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Services => "Service",
            Resource::Endpoints => "Endpoints",
            Resource::ConfigMaps => "ConfigMap",
            Resource::Pods => "Pod",
            Resource::EndpointSlices => "EndpointSlice",
        }
    }

    pub fn list_kind(self) -> &'static str {
        match self {
            Resource::Services => "ServiceList",
            Resource::Endpoints => "EndpointsList",
            Resource::ConfigMaps => "ConfigMapList",
            Resource::Pods => "PodList",
            Resource::EndpointSlices => "EndpointSliceList",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// Accepts a kind (`Service`), a plural (`services`) or a singular (`service`), any case.
    pub fn from_name(name: &str) -> Option<Resource> {
        let lower = name.to_ascii_lowercase();
        Resource::ALL.into_iter().find(|r| {
            lower == r.plural() || lower == r.singular() || lower == r.kind().to_ascii_lowercase()
        })
    }

    fn expect_named(name: &str) -> Resource {
        Resource::from_name(name)
            .unwrap_or_else(|| panic!("fake apiserver: unknown resource {name:?}"))
    }

    /// The URL prefix (`/api/v1` or `/apis/<group>/v1`) this resource is served under.
    fn path_prefix(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1",
            _ => "/api/v1",
        }
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Services => &["svc"],
            Resource::Endpoints => &["ep"],
            Resource::ConfigMaps => &["cm"],
            Resource::Pods => &["po"],
            Resource::EndpointSlices => &[],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn wire(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
struct StoredEvent {
    rv: u64,
    resource: Resource,
    event_type: EventType,
    object: Arc<Value>,
    /// The object before a MODIFIED event, so a selector watch can turn it into ADDED/DELETED.
    previous: Option<Arc<Value>>,
}

#[derive(Clone, Copy, Debug)]
enum Control {
    Expire,
    Drop,
    Hang,
}

type ObjectKey = (Resource, String, String);

struct Store {
    rv: u64,
    uid_counter: u64,
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    logs: HashMap<Resource, VecDeque<Arc<StoredEvent>>>,
    /// A watch or continue token from a resourceVersion below this has lost history: 410.
    floors: HashMap<Resource, u64>,
    list_counts: HashMap<Resource, u64>,
    watch_counts: HashMap<Resource, u64>,
    requests: Vec<String>,
    event_log_capacity: usize,
    bookmark_interval: Duration,
    delay: Duration,
    /// Every list page holds at most this many items, whatever the client's limit (0: no cap).
    max_page: usize,
}

struct Inner {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    control: broadcast::Sender<Control>,
    fail_lists: AtomicU32,
    unavailable: AtomicBool,
    /// Resource plurals answered 403 Forbidden (RBAC that does not grant them).
    forbidden: Mutex<Vec<String>>,
}

/// A fake Kubernetes API server. Clones share one store.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

/// How a write treats an existing object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    Create,
    Upsert,
}

enum WriteError {
    AlreadyExists,
    Conflict(String),
}

impl FakeApiServer {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (control, _) = broadcast::channel(64);
        FakeApiServer {
            inner: Arc::new(Inner {
                store: Mutex::new(Store {
                    rv: 0,
                    uid_counter: 0,
                    objects: BTreeMap::new(),
                    logs: HashMap::new(),
                    floors: HashMap::new(),
                    list_counts: HashMap::new(),
                    watch_counts: HashMap::new(),
                    requests: Vec::new(),
                    event_log_capacity: DEFAULT_EVENT_LOG_CAPACITY,
                    bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
                    delay: Duration::ZERO,
                    max_page: 0,
                }),
                events,
                control,
                fail_lists: AtomicU32::new(0),
                unavailable: AtomicBool::new(false),
                forbidden: Mutex::new(Vec::new()),
            }),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock (in a test) must not hide the original failure.
        self.inner
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ----- test API: objects -----

    /// Creates or replaces an object identified by its kind and metadata (namespace defaults to
    /// `default`). Returns the new resourceVersion. Panics on an object it cannot store.
    pub fn apply(&self, obj: Value) -> u64 {
        self.try_apply(obj).expect("fake apiserver: apply")
    }

    /// Like [`apply`](Self::apply) but reports a malformed object instead of panicking.
    pub fn try_apply(&self, obj: Value) -> anyhow::Result<u64> {
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("object has no kind: {obj}"))?;
        let resource = Resource::ALL
            .into_iter()
            .find(|r| r.kind() == kind)
            .ok_or_else(|| anyhow!("unsupported kind {kind:?}"))?;
        if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str)
            && api_version != resource.api_version()
        {
            bail!(
                "{kind} has apiVersion {api_version:?}, expected {:?}",
                resource.api_version()
            );
        }
        let name = meta_str(&obj, "name").ok_or_else(|| anyhow!("{kind} has no metadata.name"))?;
        let namespace = meta_str(&obj, "namespace").unwrap_or("default").to_owned();
        let name = name.to_owned();
        let mut obj = obj;
        strip_resource_version(&mut obj);
        match self.write(resource, &namespace, &name, obj, WriteMode::Upsert) {
            Ok((rv, _, _)) => Ok(rv),
            Err(WriteError::AlreadyExists | WriteError::Conflict(_)) => {
                unreachable!("upsert without resourceVersion cannot conflict")
            }
        }
    }

    /// Deletes an object; `resource_kind` is a kind or a plural (`Service`, `services`).
    /// Returns false if it did not exist.
    pub fn delete(&self, resource_kind: &str, namespace: &str, name: &str) -> bool {
        self.delete_object(Resource::expect_named(resource_kind), namespace, name)
            .is_some()
    }

    /// The stored object, as the API would return it.
    pub fn get(&self, resource_kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (
            Resource::expect_named(resource_kind),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.store().objects.get(&key).map(|o| (**o).clone())
    }

    /// Every stored object of one resource, ordered by (namespace, name).
    pub fn objects(&self, resource_kind: &str) -> Vec<Value> {
        let resource = Resource::expect_named(resource_kind);
        self.store()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == resource)
            .map(|(_, o)| (**o).clone())
            .collect()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().rv
    }

    /// Applies every object of a YAML text: several `---` documents, or `kind: List` documents
    /// with `items:`. Returns how many objects were applied.
    pub fn load_yaml_str(&self, yaml: &str) -> anyhow::Result<usize> {
        // JSON is YAML too; parse it directly so large generated clusters load quickly (the
        // YAML parser has a node budget far below a 100,000-endpoint cluster).
        let docs: Vec<Value> = if yaml.trim_start().starts_with('{') {
            vec![serde_json::from_str(yaml).context("parsing cluster JSON")?]
        } else {
            serde_saphyr::from_multiple(yaml).context("parsing cluster YAML")?
        };
        let mut objects = Vec::new();
        for doc in docs {
            match doc {
                Value::Null => {}
                Value::Object(ref map)
                    if map
                        .get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List")) =>
                {
                    let items = map
                        .get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    objects.extend(items);
                }
                other => objects.push(other),
            }
        }
        // Validate everything before applying anything, so a bad fixture leaves no half state.
        for (i, obj) in objects.iter().enumerate() {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
            if !Resource::ALL.iter().any(|r| r.kind() == kind) {
                bail!("YAML object #{i} has unsupported kind {kind:?}");
            }
            if meta_str(obj, "name").is_none() {
                bail!("YAML object #{i} ({kind}) has no metadata.name");
            }
        }
        let count = objects.len();
        for obj in objects {
            self.try_apply(obj)?;
        }
        Ok(count)
    }

    pub fn load_yaml_file(&self, path: impl AsRef<Path>) -> anyhow::Result<usize> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        self.load_yaml_str(&text)
            .with_context(|| format!("loading {}", path.display()))
    }

    // ----- test API: faults and settings -----

    /// Every open watch receives the in-stream 410 `Expired` error and ends.
    pub fn expire_watches(&self) {
        let _ = self.inner.control.send(Control::Expire);
    }

    /// Every open watch stream breaks off without a final event (the connection is aborted).
    pub fn drop_streams(&self) {
        let _ = self.inner.control.send(Control::Drop);
    }

    /// Every open watch goes silent and stays open: no event, no bookmark, no end at its
    /// `timeoutSeconds` (a connection that died behind a proxy). Its events are lost; only a
    /// client that notices the silence and watches again gets them. Later watches are normal.
    pub fn hang_watches(&self) {
        let _ = self.inner.control.send(Control::Hang);
    }

    /// The next `n` LIST requests get HTTP 500.
    pub fn fail_next_lists(&self, n: u32) {
        self.inner.fail_lists.store(n, Ordering::SeqCst);
    }

    /// Delays every response (including the start of a watch) by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.store().delay = delay;
    }

    /// While set, every request gets HTTP 503. Open watches are not touched: pair it with
    /// [`drop_streams`](Self::drop_streams) to simulate an outage.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Answers every request for `plural` (`endpointslices`, ...) with 403 Forbidden, as the API
    /// server does when RBAC does not grant it.
    pub fn forbid(&self, plural: &str) {
        self.inner
            .forbidden
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(plural.to_owned());
    }

    /// Drops all retained watch history: a watch from any older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut store = self.store();
        let rv = store.rv;
        store.logs.clear();
        for resource in Resource::ALL {
            store.floors.insert(resource, rv);
        }
    }

    /// Caps every list page at `items` (0: no cap) whatever `limit` the client asked for, as
    /// an API server may; the client must follow the continue tokens.
    pub fn set_max_page(&self, items: usize) {
        self.store().max_page = items;
    }

    /// Applies to watches started afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        assert!(!interval.is_zero(), "bookmark interval must be positive");
        self.store().bookmark_interval = interval;
    }

    /// How many events each resource keeps for replay (default 10,000).
    pub fn set_event_log_capacity(&self, capacity: usize) {
        self.store().event_log_capacity = capacity;
    }

    // ----- test API: counters -----

    /// LIST requests received for a resource (kind or plural), including failed ones.
    pub fn list_count(&self, resource: &str) -> u64 {
        let resource = Resource::expect_named(resource);
        self.store()
            .list_counts
            .get(&resource)
            .copied()
            .unwrap_or(0)
    }

    /// WATCH requests received for a resource (kind or plural), including failed ones.
    pub fn watch_count(&self, resource: &str) -> u64 {
        let resource = Resource::expect_named(resource);
        self.store()
            .watch_counts
            .get(&resource)
            .copied()
            .unwrap_or(0)
    }

    /// Every request received, as `METHOD /path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }

    // ----- serving -----

    /// An axum router serving this fake; usable in-process with `kube::Client::new(router, ns)`.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Serves on a real TCP listener. Bind `127.0.0.1:0` and use the returned address.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding fake apiserver to {addr}"))?;
        self.serve_listener(listener)
    }

    /// Serves on a listener bound elsewhere (inside a network namespace, say).
    pub fn serve_std(
        &self,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
        listener.set_nonblocking(true)?;
        self.serve_listener(tokio::net::TcpListener::from_std(listener)?)
    }

    fn serve_listener(
        &self,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
        let local = listener.local_addr()?;
        let router = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%e, "fake apiserver stopped");
            }
        });
        Ok((local, task))
    }

    // ----- store internals -----

    /// Stores an object, filling server-owned metadata. Returns (rv, object, created).
    fn write(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        obj: Value,
        mode: WriteMode,
    ) -> Result<(u64, Arc<Value>, bool), WriteError> {
        let mut store = self.store();
        let key = (resource, namespace.to_owned(), name.to_owned());
        let previous = store.objects.get(&key).cloned();
        if let Some(prev) = &previous {
            if mode == WriteMode::Create {
                return Err(WriteError::AlreadyExists);
            }
            if let Some(wanted) = meta_str(&obj, "resourceVersion").filter(|s| !s.is_empty()) {
                let current = meta_str(prev, "resourceVersion").unwrap_or("");
                if wanted != current {
                    return Err(WriteError::Conflict(format!(
                        "the object has been modified; resourceVersion {wanted} is not the current {current}"
                    )));
                }
            }
        }
        store.rv += 1;
        let rv = store.rv;
        let mut obj = obj;
        if !obj.is_object() {
            obj = json!({});
        }
        let root = obj.as_object_mut().expect("object checked above");
        root.insert("apiVersion".into(), resource.api_version().into());
        root.insert("kind".into(), resource.kind().into());
        let meta = root
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        let meta = meta.as_object_mut().expect("metadata made an object above");
        meta.insert("name".into(), name.into());
        meta.insert("namespace".into(), namespace.into());
        meta.insert("resourceVersion".into(), rv.to_string().into());
        let prev_meta = previous.as_ref().and_then(|p| p.get("metadata"));
        for field in ["uid", "creationTimestamp"] {
            if meta.get(field).is_none_or(Value::is_null) {
                let value = match prev_meta.and_then(|m| m.get(field)) {
                    Some(v) => v.clone(),
                    None if field == "uid" => {
                        store.uid_counter += 1;
                        format!("00000000-0000-4000-8000-{:012x}", store.uid_counter).into()
                    }
                    None => rfc3339_now().into(),
                };
                meta.insert(field.into(), value);
            }
        }
        let obj = Arc::new(obj);
        let created = previous.is_none();
        let event_type = if created {
            EventType::Added
        } else {
            EventType::Modified
        };
        store.objects.insert(key, obj.clone());
        self.record(&mut store, resource, event_type, obj.clone(), previous);
        Ok((rv, obj, created))
    }

    fn delete_object(&self, resource: Resource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let mut store = self.store();
        let key = (resource, namespace.to_owned(), name.to_owned());
        let removed = store.objects.remove(&key)?;
        store.rv += 1;
        // A real apiserver reports the deleted object at the deletion's resourceVersion.
        let mut obj = (*removed).clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), store.rv.to_string().into());
        }
        let obj = Arc::new(obj);
        self.record(&mut store, resource, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// Appends to the resource's log and broadcasts. Called with the store locked, so every
    /// watcher that subscribed under the lock sees events strictly after its snapshot.
    fn record(
        &self,
        store: &mut Store,
        resource: Resource,
        event_type: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(StoredEvent {
            rv: store.rv,
            resource,
            event_type,
            object,
            previous,
        });
        let capacity = store.event_log_capacity;
        let log = store.logs.entry(resource).or_default();
        log.push_back(event.clone());
        let mut dropped = None;
        while log.len() > capacity {
            dropped = log.pop_front().map(|e| e.rv);
        }
        if let Some(rv) = dropped {
            store.floors.insert(resource, rv);
        }
        let _ = self.inner.events.send(event);
    }
}

// ----- HTTP -----

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn strip_resource_version(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

fn expired_status() -> Value {
    status_object(410, "Expired", "too old resource version")
}

async fn handle(
    State(fake): State<FakeApiServer>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    tracing::debug!(%method, %path_and_query, "fake apiserver request");
    let delay = {
        let mut store = fake.store();
        store.requests.push(format!("{method} {path_and_query}"));
        store.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fake.inner.unavailable.load(Ordering::SeqCst) {
        return status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake apiserver is unavailable",
        );
    }
    let query: HashMap<String, String> = match Query::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(e) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group_prefix, rest): (&str, &[&str]) = match segments.as_slice() {
        ["version"] => return json_response(StatusCode::OK, &version_info()),
        ["healthz" | "readyz" | "livez"] => return (StatusCode::OK, "ok").into_response(),
        ["api"] => return json_response(StatusCode::OK, &api_versions()),
        ["apis"] => return json_response(StatusCode::OK, &api_groups()),
        ["api", "v1", rest @ ..] => ("/api/v1", rest),
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => ("/apis/discovery.k8s.io/v1", rest),
        _ => return not_found(uri.path()),
    };
    if rest.is_empty() {
        return json_response(StatusCode::OK, &resource_list(group_prefix));
    }
    let resource_in = |plural: &str| {
        Resource::ALL
            .into_iter()
            .find(|r| r.plural() == plural && r.path_prefix() == group_prefix)
    };
    let (resource, namespace, name) = match rest {
        [plural] => (resource_in(plural), None, None),
        ["namespaces", ns, plural] => (resource_in(plural), Some(*ns), None),
        ["namespaces", ns, plural, name] => (resource_in(plural), Some(*ns), Some(*name)),
        _ => (None, None, None),
    };
    let Some(resource) = resource else {
        return not_found(uri.path());
    };
    let forbidden = fake
        .inner
        .forbidden
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|p| p == resource.plural());
    if forbidden {
        return status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{} is forbidden: User \"system:serviceaccount:kube-system:kube-dns\" cannot list resource \"{}\"",
                resource.plural(),
                resource.plural()
            ),
        );
    }
    match (name, method) {
        (None, Method::GET) => {
            let filter = match Filter::from_query(namespace, &query) {
                Ok(f) => f,
                Err(e) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                fake.watch(resource, filter, &query)
            } else {
                fake.list(resource, &filter, &query)
            }
        }
        (None, Method::POST) => match namespace {
            Some(ns) => fake.http_write(resource, ns, None, &body, WriteMode::Create),
            None => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "create needs a namespaced path",
            ),
        },
        (Some(name), Method::GET) => {
            let key = (
                resource,
                namespace.unwrap_or_default().to_owned(),
                name.to_owned(),
            );
            match fake.store().objects.get(&key) {
                Some(obj) => json_response(StatusCode::OK, obj),
                None => not_found_object(resource, name),
            }
        }
        (Some(name), Method::PUT) => fake.http_write(
            resource,
            namespace.unwrap_or_default(),
            Some(name),
            &body,
            WriteMode::Upsert,
        ),
        (Some(name), Method::DELETE) => {
            match fake.delete_object(resource, namespace.unwrap_or_default(), name) {
                Some(obj) => json_response(StatusCode::OK, &obj),
                None => not_found_object(resource, name),
            }
        }
        (_, method) => status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the fake apiserver does not support {method} here"),
        ),
    }
}

fn not_found(path: &str) -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource {path}"),
    )
}

fn not_found_object(resource: Resource, name: &str) -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", resource.plural()),
    )
}

impl FakeApiServer {
    fn http_write(
        &self,
        resource: Resource,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        mode: WriteMode,
    ) -> Response {
        let obj: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "body is not a JSON object",
                );
            }
            Err(e) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid JSON body: {e}"),
                );
            }
        };
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != resource.kind()
        {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("kind {kind} does not match {}", resource.plural()),
            );
        }
        if let Some(body_ns) = meta_str(&obj, "namespace")
            && body_ns != namespace
        {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "the namespace of the object ({body_ns}) does not match the namespace on the request ({namespace})"
                ),
            );
        }
        let body_name = meta_str(&obj, "name");
        let name = match (name, body_name) {
            (Some(path), Some(body)) if path != body => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "the name of the object ({body}) does not match the name on the URL ({path})"
                    ),
                );
            }
            (Some(n), _) | (None, Some(n)) => n.to_owned(),
            (None, None) => {
                return status_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value",
                );
            }
        };
        let mut obj = obj;
        if mode == WriteMode::Create {
            strip_resource_version(&mut obj);
        }
        match self.write(resource, namespace, &name, obj, mode) {
            Ok((_, obj, created)) => json_response(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &obj,
            ),
            Err(WriteError::AlreadyExists) => status_response(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", resource.plural()),
            ),
            Err(WriteError::Conflict(msg)) => {
                status_response(StatusCode::CONFLICT, "Conflict", &msg)
            }
        }
    }

    fn list(
        &self,
        resource: Resource,
        filter: &Filter,
        query: &HashMap<String, String>,
    ) -> Response {
        let mut store = self.store();
        *store.list_counts.entry(resource).or_default() += 1;
        let failing = self
            .inner
            .fail_lists
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected list failure",
            );
        }
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None => 0,
            Some(Ok(l)) => l,
            Some(Err(_)) => {
                return status_response(StatusCode::BAD_REQUEST, "BadRequest", "invalid limit");
            }
        };
        // The continue token carries the first page's resourceVersion: every page reports it,
        // so a watch started after the last page replays whatever changed during paging.
        let limit = match (limit, store.max_page) {
            (_, 0) => limit,
            (0, cap) => cap,
            (limit, cap) => limit.min(cap),
        };
        let (snapshot_rv, start) = match query.get("continue").filter(|c| !c.is_empty()) {
            None => (store.rv, Bound::Unbounded),
            Some(token) => match decode_continue(token) {
                Some((rv, ns, name)) => {
                    if rv < store.floors.get(&resource).copied().unwrap_or(0) {
                        return status_response(
                            StatusCode::GONE,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent list result.",
                        );
                    }
                    (rv, Bound::Excluded((resource, ns, name)))
                }
                None => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "invalid continue token",
                    );
                }
            },
        };
        let start = match start {
            Bound::Unbounded => Bound::Included((resource, String::new(), String::new())),
            other => other,
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut last_key: Option<&ObjectKey> = None;
        for (key, obj) in store
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.0 == resource)
            .filter(|(_, o)| filter.matches(o))
        {
            if limit > 0 && items.len() == limit {
                let (_, ns, name) = last_key.expect("a full page has a last item");
                next = Some(encode_continue(snapshot_rv, ns, name));
                break;
            }
            items.push(obj.clone());
            last_key = Some(key);
        }
        let mut metadata = json!({ "resourceVersion": snapshot_rv.to_string() });
        if let Some(token) = next {
            metadata["continue"] = token.into();
        }
        let body = json!({
            "kind": resource.list_kind(),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items.iter().map(|o| &**o).collect::<Vec<_>>(),
        });
        drop(store);
        json_response(StatusCode::OK, &body)
    }

    fn watch(
        &self,
        resource: Resource,
        filter: Filter,
        query: &HashMap<String, String>,
    ) -> Response {
        let start = match query.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => None,
            Some(rv) => match rv.parse::<u64>() {
                Ok(rv) => Some(rv),
                Err(_) => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("invalid resourceVersion {rv:?}"),
                    );
                }
            },
        };
        let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
            None => None,
            Some(Ok(t)) => Some(Duration::from_secs(t)),
            Some(Err(_)) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid timeoutSeconds",
                );
            }
        };
        let flag = |name: &str| query.get(name).is_some_and(|v| v == "true" || v == "1");
        let request = WatchRequest {
            resource,
            filter,
            start,
            timeout,
            bookmarks: flag("allowWatchBookmarks"),
            send_initial_events: flag("sendInitialEvents"),
        };
        // Subscribe before answering, so a fault injected right after the response head (or
        // after watch_count() went up) reaches this watch.
        let control = self.inner.control.subscribe();
        let (events, initial, bookmark_interval) = {
            let mut store = self.store();
            *store.watch_counts.entry(resource).or_default() += 1;
            let events = self.inner.events.subscribe();
            let initial = self.initial_watch_lines(&store, &request);
            (events, initial, store.bookmark_interval)
        };
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
        let subscriptions = Subscriptions { control, events };
        tokio::spawn(self.clone().run_watch(
            request,
            bookmark_interval,
            subscriptions,
            initial,
            tx,
        ));
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(ReceiverStream::new(rx)))
            .expect("static response parts are valid")
    }

    async fn run_watch(
        self,
        req: WatchRequest,
        bookmark_interval: Duration,
        subscriptions: Subscriptions,
        initial: Option<Vec<Bytes>>,
        tx: WatchSender,
    ) {
        let Subscriptions {
            mut control,
            mut events,
        } = subscriptions;
        let Some(initial) = initial else {
            let _ = tx.send(Ok(event_line("ERROR", &expired_status()))).await;
            return;
        };
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmarks = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        bookmarks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let lines: Vec<Bytes> = tokio::select! {
                () = tx.closed() => return,
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => return,
                control = control.recv() => match control {
                    Ok(Control::Expire) => {
                        let _ = tx.send(Ok(event_line("ERROR", &expired_status()))).await;
                        return;
                    }
                    Ok(Control::Drop) => {
                        let _ = tx.send(Err(std::io::Error::other("fake apiserver dropped the stream"))).await;
                        return;
                    }
                    Ok(Control::Hang) => {
                        tx.closed().await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                event = events.recv() => match event {
                    Ok(event) => render_event(&event, &req).into_iter().collect(),
                    Err(broadcast::error::RecvError::Lagged(_)) => vec![event_line("ERROR", &expired_status())],
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmarks.tick(), if req.bookmarks => {
                    match self.drain_then_bookmark(&mut events, &req) {
                        Some(lines) => lines,
                        None => vec![event_line("ERROR", &expired_status())],
                    }
                }
            };
            let ends = lines
                .last()
                .is_some_and(|l| l.starts_with(b"{\"type\":\"ERROR\""));
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if ends {
                return;
            }
        }
    }

    /// The events a new watch starts with, or None if its resourceVersion is too old.
    fn initial_watch_lines(&self, store: &Store, req: &WatchRequest) -> Option<Vec<Bytes>> {
        let mut lines = Vec::new();
        match req.start {
            Some(rv) if !req.send_initial_events => {
                if rv < store.floors.get(&req.resource).copied().unwrap_or(0) {
                    return None;
                }
                if let Some(log) = store.logs.get(&req.resource) {
                    lines.extend(
                        log.iter()
                            .filter(|e| e.rv > rv)
                            .filter_map(|e| render_event(e, req)),
                    );
                }
            }
            // No resourceVersion (or "0"), or a streaming list: the current state as ADDED.
            _ => {
                lines.extend(
                    store
                        .objects
                        .iter()
                        .filter(|(k, o)| k.0 == req.resource && req.filter.matches(o))
                        .map(|(_, o)| event_line("ADDED", o)),
                );
                if req.send_initial_events {
                    let mut bookmark = bookmark_object(req.resource, store.rv);
                    bookmark["metadata"]["annotations"] =
                        json!({ INITIAL_EVENTS_END_ANNOTATION: "true" });
                    lines.push(event_line("BOOKMARK", &bookmark));
                }
            }
        }
        Some(lines)
    }

    /// Delivers every event already broadcast, then a bookmark at the current resourceVersion.
    /// Draining under the lock guarantees the bookmark never skips an undelivered event.
    fn drain_then_bookmark(
        &self,
        events: &mut broadcast::Receiver<Arc<StoredEvent>>,
        req: &WatchRequest,
    ) -> Option<Vec<Bytes>> {
        let store = self.store();
        let mut lines = Vec::new();
        loop {
            match events.try_recv() {
                Ok(event) => lines.extend(render_event(&event, req)),
                Err(broadcast::error::TryRecvError::Lagged(_)) => return None,
                Err(_) => break,
            }
        }
        lines.push(event_line(
            "BOOKMARK",
            &bookmark_object(req.resource, store.rv),
        ));
        Some(lines)
    }
}

type WatchSender = mpsc::Sender<Result<Bytes, std::io::Error>>;

struct Subscriptions {
    control: broadcast::Receiver<Control>,
    events: broadcast::Receiver<Arc<StoredEvent>>,
}

struct WatchRequest {
    resource: Resource,
    filter: Filter,
    /// None: start from the current state (synthetic ADDED events).
    start: Option<u64>,
    timeout: Option<Duration>,
    bookmarks: bool,
    send_initial_events: bool,
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = format!("{{\"type\":\"{event_type}\",\"object\":{object}}}");
    line.push('\n');
    Bytes::from(line)
}

fn bookmark_object(resource: Resource, rv: u64) -> Value {
    json!({
        "kind": resource.kind(),
        "apiVersion": resource.api_version(),
        "metadata": { "resourceVersion": rv.to_string() },
    })
}

/// Renders an event for one watch; a MODIFIED event that moves an object into or out of the
/// watch's selection becomes ADDED or DELETED, as the real apiserver does.
fn render_event(event: &StoredEvent, req: &WatchRequest) -> Option<Bytes> {
    if event.resource != req.resource {
        return None;
    }
    let now = req.filter.matches(&event.object);
    let event_type = match event.event_type {
        EventType::Added | EventType::Deleted => now.then_some(event.event_type),
        EventType::Modified => {
            let before = event
                .previous
                .as_ref()
                .is_some_and(|p| req.filter.matches(p));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }?;
    Some(event_line(event_type.wire(), &event.object))
}

fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    format!("{rv}/{namespace}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

// ----- selectors -----

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    /// (dotted field path, wanted value, equal?)
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    fn from_query(
        namespace: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Filter, String> {
        Ok(Filter {
            namespace: namespace.map(str::to_owned),
            labels: parse_label_selector(query.get("labelSelector").map_or("", String::as_str))?,
            fields: parse_field_selector(query.get("fieldSelector").map_or("", String::as_str))?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && meta_str(obj, "namespace") != Some(ns.as_str())
        {
            return false;
        }
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        });
        labels_match
            && self
                .fields
                .iter()
                .all(|(path, value, equal)| (field_value(obj, path) == *value) == *equal)
    }
}

/// A field's value as the apiserver compares it: strings as-is, scalars printed, missing empty.
fn field_value(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits at commas outside parentheses (`a in (x,y),b` has two terms).
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            if let Some(open) = term.find('(') {
                let values_text = term[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| format!("unterminated set in label selector term {term:?}"))?;
                let values = values_text
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect();
                let head = term[..open].trim();
                if let Some(key) = head.strip_suffix(" notin") {
                    Ok(LabelRequirement::NotIn(key.trim().to_owned(), values))
                } else if let Some(key) = head.strip_suffix(" in") {
                    Ok(LabelRequirement::In(key.trim().to_owned(), values))
                } else {
                    Err(format!("unsupported label selector term {term:?}"))
                }
            } else if let Some(key) = term.strip_prefix('!') {
                Ok(LabelRequirement::NotExists(key.trim().to_owned()))
            } else if let Some((k, v)) = term.split_once("!=") {
                Ok(LabelRequirement::NotEquals(
                    k.trim().to_owned(),
                    v.trim().to_owned(),
                ))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Ok(LabelRequirement::Equals(
                    k.trim().to_owned(),
                    v.trim().to_owned(),
                ))
            } else {
                Ok(LabelRequirement::Exists(term.to_owned()))
            }
        })
        .collect()
}

fn parse_field_selector(selector: &str) -> Result<Vec<(String, String, bool)>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                Ok((k.trim().to_owned(), v.trim().to_owned(), false))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Ok((k.trim().to_owned(), v.trim().to_owned(), true))
            } else {
                Err(format!("invalid field selector term {term:?}"))
            }
        })
        .collect()
}

// ----- discovery documents -----

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }],
    })
}

fn api_groups() -> Value {
    let version = json!({ "groupVersion": "discovery.k8s.io/v1", "version": "v1" });
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{ "name": "discovery.k8s.io", "versions": [version], "preferredVersion": version }],
    })
}

fn resource_list(prefix: &str) -> Value {
    let group_version = prefix
        .trim_start_matches("/api/")
        .trim_start_matches("/apis/");
    let resources: Vec<Value> = Resource::ALL
        .into_iter()
        .filter(|r| r.path_prefix() == prefix)
        .map(|r| {
            json!({
                "name": r.plural(),
                "singularName": r.singular(),
                "namespaced": true,
                "kind": r.kind(),
                "verbs": ["create", "delete", "get", "list", "update", "watch"],
                "shortNames": r.short_names(),
            })
        })
        .collect();
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}

// ----- helpers -----

/// The current UTC time as RFC 3339 (`2025-01-02T03:04:05Z`), without a date library.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rem = secs % 86_400;
    let (year, month, day) = daemon_support::clock::civil_from_days(secs / 86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes a minimal kubeconfig pointing at `server_url` (e.g. `http://127.0.0.1:PORT`), with no
/// credentials and one context made current.
pub fn write_kubeconfig(path: impl AsRef<Path>, server_url: &str) -> anyhow::Result<()> {
    let path = path.as_ref();
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server_url}
users:
- name: fake
  user: {{}}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
preferences: {{}}
"
    );
    std::fs::write(path, text).with_context(|| format!("writing kubeconfig {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(labels: Value) -> Value {
        json!({ "metadata": { "name": "a", "namespace": "ns", "labels": labels }, "spec": { "nodeName": "n1" } })
    }

    fn filter(labels: &str, fields: &str) -> Filter {
        let mut q = HashMap::new();
        q.insert("labelSelector".to_owned(), labels.to_owned());
        q.insert("fieldSelector".to_owned(), fields.to_owned());
        Filter::from_query(None, &q).expect("valid selectors")
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let o = obj(json!({ "app": "web", "tier": "front" }));
        assert!(filter("app=web", "").matches(&o));
        assert!(filter("app==web,tier", "").matches(&o));
        assert!(!filter("app!=web", "").matches(&o));
        assert!(filter("missing!=x", "").matches(&o));
        assert!(filter("!missing", "").matches(&o));
        assert!(!filter("!app", "").matches(&o));
        assert!(filter("app in (db, web),tier notin (back)", "").matches(&o));
        assert!(!filter("app notin (web)", "").matches(&o));
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let o = obj(json!({}));
        assert!(filter("", "metadata.name=a,metadata.namespace=ns").matches(&o));
        assert!(filter("", "spec.nodeName==n1").matches(&o));
        assert!(!filter("", "metadata.name!=a").matches(&o));
        assert!(parse_field_selector("metadata.name").is_err());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "kube-system", "kube-dns");
        assert_eq!(
            decode_continue(&token),
            Some((42, "kube-system".into(), "kube-dns".into()))
        );
        assert_eq!(decode_continue("zz"), None);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let ts = rfc3339_now();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ts}");
    }

    #[test]
    fn apply_sets_server_owned_metadata_and_keeps_uid() {
        let fake = FakeApiServer::new();
        let rv1 = fake.apply(json!({"kind": "ConfigMap", "metadata": {"name": "c"}}));
        let first = fake.get("configmaps", "default", "c").expect("stored");
        assert_eq!(first["apiVersion"], "v1");
        assert_eq!(first["metadata"]["resourceVersion"], rv1.to_string());
        let rv2 = fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}}));
        assert!(rv2 > rv1);
        let second = fake.get("ConfigMap", "default", "c").expect("stored");
        assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);
        assert_eq!(second["data"]["k"], "v");
        assert!(fake.delete("configmap", "default", "c"));
        assert!(!fake.delete("configmap", "default", "c"));
        assert!(
            fake.try_apply(json!({"kind": "Secret", "metadata": {"name": "s"}}))
                .is_err()
        );
    }
}
