//! Test-only helpers for the shipped manifest: rendering it, finding its containers, and
//! expanding container args the way the kubelet does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository root (where `kube-dns.yaml` and `kustomization.yaml` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every non-empty document of a multi-document YAML text.
pub fn parse_objects(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).context("parsing manifest YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kubectl kustomize <dir>`, parsed.
pub fn kustomize(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .context("running kubectl kustomize (is kubectl installed?)")?;
    if !output.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_objects(&String::from_utf8(output.stdout)?)
}

/// The one object of `kind` named `name`.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => bail!("{} {kind} objects named {name}", found.len()),
    }
}

/// The containers of the `kube-dns` Deployment, by name.
pub fn containers(objects: &[Value]) -> anyhow::Result<HashMap<String, Value>> {
    pod_containers(object(objects, "Deployment", "kube-dns")?)
}

/// The containers of a workload's pod template (Deployment, DaemonSet), by name.
pub fn pod_containers(workload: &Value) -> anyhow::Result<HashMap<String, Value>> {
    let list = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .with_context(|| format!("{} has no containers", workload["kind"]))?;
    Ok(list
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or("").to_owned(), c.clone()))
        .collect())
}

/// A container's args with `$(VAR)` expanded from its literal `env`, as the kubelet does
/// (`$$` is a literal `$`; an unknown variable stays as written).
pub fn expanded_args(container: &Value) -> anyhow::Result<Vec<String>> {
    expanded_args_with(container, &[])
}

/// [`expanded_args`] with the variables the kubelet adds on its own (a Service's
/// `<NAME>_SERVICE_HOST`, say) in `extra`; the container's `env` wins over them, as in the
/// kubelet.
pub fn expanded_args_with(
    container: &Value,
    extra: &[(&str, &str)],
) -> anyhow::Result<Vec<String>> {
    let mut env: HashMap<&str, &str> = extra.iter().copied().collect();
    if let Some(vars) = container["env"].as_array() {
        env.extend(
            vars.iter()
                .filter_map(|v| Some((v["name"].as_str()?, v["value"].as_str()?))),
        );
    }
    let args = container["args"]
        .as_array()
        .with_context(|| format!("container {} has no args", container["name"]))?;
    args.iter()
        .map(|a| {
            let a = a.as_str().context("arg is not a string")?;
            Ok(expand(a, &env))
        })
        .collect()
}

fn expand(arg: &str, env: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The `(port, path)` of every httpGet probe of a container, with the probe kind.
pub fn http_probes(container: &Value) -> Vec<(&'static str, u16, String)> {
    let mut probes = Vec::new();
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &container[kind]["httpGet"];
        if let (Some(port), Some(path)) = (get["port"].as_u64(), get["path"].as_str()) {
            probes.push((kind, u16::try_from(port).unwrap_or(0), path.to_owned()));
        }
    }
    probes
}

/// The declared containerPorts of a container.
pub fn container_ports(container: &Value) -> Vec<u16> {
    container["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p["containerPort"].as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The first-cell backticked names of the table rows under `## <binary>` / `### <part>` in
/// docs/reference.md: flags (`--x`, `-x`), endpoints (`/x`) or metric names.
pub fn reference_entries(binary: &str, part: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join("docs/reference.md"))?;
    let mut in_binary = false;
    let mut in_part = false;
    let mut entries = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_binary = title.trim() == format!("`{binary}`");
            in_part = false;
        } else if let Some(title) = line.strip_prefix("### ") {
            in_part = in_binary && title.trim() == part;
        } else if in_part && line.starts_with("| ") && !line.starts_with("| ---") {
            let first = line.split('|').nth(1).unwrap_or("");
            let mut rest = first;
            while let Some(start) = rest.find('`') {
                let after = &rest[start + 1..];
                let Some(end) = after.find('`') else { break };
                entries.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
        }
    }
    if entries.is_empty() {
        bail!("docs/reference.md has no entries under `{binary}` / {part}");
    }
    Ok(entries)
}

/// The metric family names of a Prometheus text exposition (`# TYPE` lines).
pub fn metric_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Each object's (kind, name), in the order given.
pub fn kinds_and_names(objects: &[Value]) -> Vec<(String, String)> {
    objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or("").to_owned(),
                o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// (kind, name) pairs as owned strings, to compare with [`kinds_and_names`].
pub fn owned_pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_kubelet() {
        let env: HashMap<&str, &str> = [("D", "cluster.local")].into_iter().collect();
        assert_eq!(expand("--domain=$(D).", &env), "--domain=cluster.local.");
        assert_eq!(expand("a$$(D)b", &env), "a$(D)b");
        assert_eq!(expand("$(NOPE)", &env), "$(NOPE)");
        assert_eq!(expand("x$", &env), "x$");
    }
}
