//! Longest-suffix routing of query names: the one table behind kube-dns's stub domains and
//! dns-cache's `--server=/domain/` routes.

/// Whether the lower-case `name` is `domain` or lies below it (the root `""` holds every name).
pub fn in_domain(name: &str, domain: &str) -> bool {
    domain.is_empty()
        || name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

/// Routes by domain, longest domain first; the root route (`""`), if any, matches last.
#[derive(Debug, Clone)]
pub struct SuffixRoutes<T> {
    routes: Vec<(String, T)>,
}

impl<T> Default for SuffixRoutes<T> {
    fn default() -> Self {
        SuffixRoutes { routes: Vec::new() }
    }
}

impl<T> SuffixRoutes<T> {
    /// Domains are matched as given (lower-case, no trailing dot). Of equal lengths, the first
    /// given comes first.
    pub fn new(routes: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut routes: Vec<(String, T)> = routes.into_iter().collect();
        routes.sort_by_key(|(domain, _)| std::cmp::Reverse(domain.len()));
        SuffixRoutes { routes }
    }

    /// The route of the longest domain that holds `name`.
    pub fn route_for(&self, name: &str) -> Option<&T> {
        self.routes
            .iter()
            .find(|(domain, _)| in_domain(name, domain))
            .map(|(_, route)| route)
    }

    /// Every route, longest domain first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.routes
            .iter()
            .map(|(domain, route)| (domain.as_str(), route))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_suffix_wins_and_labels_are_whole() {
        let routes = SuffixRoutes::new([
            (String::new(), "default"),
            ("acme.local".to_owned(), "acme"),
            ("x.acme.local".to_owned(), "x"),
        ]);
        assert_eq!(routes.route_for("www.x.acme.local"), Some(&"x"));
        assert_eq!(routes.route_for("x.acme.local"), Some(&"x"));
        assert_eq!(routes.route_for("y.acme.local"), Some(&"acme"));
        assert_eq!(routes.route_for("acme.local"), Some(&"acme"));
        assert_eq!(routes.route_for("notacme.local"), Some(&"default"));
        assert_eq!(routes.route_for(""), Some(&"default"));
        let domains: Vec<&str> = routes.iter().map(|(d, _)| d).collect();
        assert_eq!(domains, ["x.acme.local", "acme.local", ""]);
    }

    #[test]
    fn without_a_root_route_other_names_have_none() {
        let routes = SuffixRoutes::new([("cluster.local".to_owned(), 1)]);
        assert_eq!(routes.route_for("a.cluster.local"), Some(&1));
        assert_eq!(routes.route_for("cluster.locals"), None);
        assert_eq!(routes.route_for("local"), None);
        assert!(SuffixRoutes::<u8>::default().route_for("x").is_none());
    }
}
