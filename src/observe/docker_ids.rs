//! The container ids this process has seen on the Docker socket, so that a name or short id
//! prefix in a request path resolves to the full 64-hex `container.id` (DESIGN.md, span
//! contract). Fed by create, inspect and list responses and by container events; shared by
//! every Docker session of an intercept. Rule it keeps: bounded ([`MAX_CONTAINERS`],
//! [`MAX_EXECS`]), oldest forgotten first; only full ids are ever stored or returned.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

/// Most containers remembered; past it the oldest learned is forgotten. 4096.
pub const MAX_CONTAINERS: usize = 4096;

/// Most exec id → container id pairs remembered; past it the oldest is forgotten. 4096.
pub const MAX_EXECS: usize = 4096;

/// Whether `s` is a full Docker object id (schema's rule, used here to keep the registry clean).
pub use crate::schema::docker_extract::is_full_id;

/// Name → full id and unique-prefix → full id resolution, bounded. Thread-safe.
pub struct DockerIds {
    inner: Mutex<Inner>,
    max_containers: usize,
    max_execs: usize,
}

#[derive(Default)]
struct Inner {
    /// Full id → its name (without the leading `/`) and the generation it was last learned in.
    containers: BTreeMap<String, Entry>,
    /// Name → full id.
    names: HashMap<String, String>,
    /// Learn order for eviction: (generation, id). Stale pairs (older generation) are skipped.
    order: VecDeque<(u64, String)>,
    generation: u64,
    /// Exec id → container id, and their learn order.
    execs: HashMap<String, String>,
    exec_order: VecDeque<String>,
}

struct Entry {
    name: Option<String>,
    generation: u64,
}

impl Default for DockerIds {
    fn default() -> Self {
        DockerIds::new()
    }
}

impl fmt::Debug for DockerIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("DockerIds")
            .field("containers", &inner.containers.len())
            .field("execs", &inner.execs.len())
            .finish()
    }
}

impl DockerIds {
    /// An empty registry with the default bounds.
    pub fn new() -> DockerIds {
        DockerIds::with_limits(MAX_CONTAINERS, MAX_EXECS)
    }

    /// An empty registry remembering at most `max_containers` containers and `max_execs`
    /// execs (each at least 1).
    pub fn with_limits(max_containers: usize, max_execs: usize) -> DockerIds {
        DockerIds {
            inner: Mutex::new(Inner::default()),
            max_containers: max_containers.max(1),
            max_execs: max_execs.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent-enough maps.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers container `id` (ignored unless a full id) and, when given, its name (a
    /// leading `/` as in inspect and list responses is dropped). A name moves to the newest id.
    pub fn learn(&self, id: &str, name: Option<&str>) {
        if !is_full_id(id) {
            return;
        }
        let name = name.map(|n| n.strip_prefix('/').unwrap_or(n)).filter(|n| !n.is_empty());
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let old_name = match inner.containers.get_mut(id) {
            Some(entry) => {
                entry.generation = generation;
                match name {
                    Some(n) if entry.name.as_deref() != Some(n) => entry.name.replace(n.to_owned()),
                    _ => None,
                }
            }
            None => {
                inner.containers.insert(
                    id.to_owned(),
                    Entry {
                        name: name.map(str::to_owned),
                        generation,
                    },
                );
                None
            }
        };
        if let Some(old) = old_name
            && inner.names.get(&old).is_some_and(|v| v == id)
        {
            inner.names.remove(&old);
        }
        if let Some(n) = name
            && let Some(previous) = inner.names.insert(n.to_owned(), id.to_owned())
            && previous != id
            && let Some(entry) = inner.containers.get_mut(&previous)
        {
            entry.name = None;
        }
        inner.order.push_back((generation, id.to_owned()));
        while inner.containers.len() > self.max_containers {
            let Some((g, oldest)) = inner.order.pop_front() else {
                break;
            };
            if inner.containers.get(&oldest).is_some_and(|e| e.generation == g) {
                inner.remove(&oldest);
            }
        }
        // Re-learning leaves stale pairs behind: drop them before the queue outgrows the map.
        if inner.order.len() > 2 * self.max_containers {
            let Inner { order, containers, .. } = &mut *inner;
            order.retain(|(g, id)| containers.get(id).is_some_and(|e| e.generation == *g));
        }
    }

    /// Forgets container `id` and its name (after a successful remove).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Remembers that exec `exec_id` runs in container `container_id` (both full ids).
    pub fn learn_exec(&self, exec_id: &str, container_id: &str) {
        if !is_full_id(exec_id) || !is_full_id(container_id) {
            return;
        }
        let mut inner = self.lock();
        if inner
            .execs
            .insert(exec_id.to_owned(), container_id.to_owned())
            .is_none()
        {
            inner.exec_order.push_back(exec_id.to_owned());
        }
        while inner.execs.len() > self.max_execs {
            let Some(oldest) = inner.exec_order.pop_front() else {
                break;
            };
            inner.execs.remove(&oldest);
        }
    }

    /// The container of exec `exec_id`, if learned.
    pub fn exec_container(&self, exec_id: &str) -> Option<String> {
        self.lock().execs.get(exec_id).cloned()
    }

    /// The full id for a container reference as Docker resolves it: a full id is itself
    /// (known or not), then an exact name (a leading `/` allowed), then a hex prefix that
    /// exactly one known id starts with. `None` when unresolved or ambiguous.
    pub fn resolve(&self, reference: &str) -> Option<String> {
        if is_full_id(reference) {
            return Some(reference.to_owned());
        }
        let inner = self.lock();
        let name = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(id) = inner.names.get(name) {
            return Some(id.clone());
        }
        if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let prefix = reference.to_ascii_lowercase();
        let mut matches = inner
            .containers
            .range(prefix.clone()..)
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(&prefix));
        let first = matches.next()?;
        matches.next().is_none().then(|| first.clone())
    }

    /// Number of containers remembered.
    pub fn len(&self) -> usize {
        self.lock().containers.len()
    }

    /// True when no container is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(entry) = self.containers.remove(id)
            && let Some(name) = entry.name
            && self.names.get(&name).is_some_and(|v| v == id)
        {
            self.names.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> String {
        format!("{n:08x}{}", "0".repeat(56))
    }

    #[test]
    fn resolves_full_ids_names_and_unique_prefixes() {
        let ids = DockerIds::new();
        let a = "3439457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259";
        let b = "34aa457a70d681aa9311e26be6eb9d0efc9ca101b19722085c5e3520a873b259";
        ids.learn(a, Some("/fixture-c1"));
        ids.learn(b, None);
        assert_eq!(ids.resolve("fixture-c1").as_deref(), Some(a));
        assert_eq!(ids.resolve("/fixture-c1").as_deref(), Some(a));
        assert_eq!(ids.resolve("3439").as_deref(), Some(a));
        assert_eq!(ids.resolve("34"), None, "ambiguous");
        assert_eq!(ids.resolve("nosuch"), None);
        assert_eq!(ids.resolve(&id(7)).as_deref(), Some(id(7).as_str()));
        ids.learn("not-an-id", Some("x"));
        assert_eq!(ids.resolve("x"), None);
        ids.forget(a);
        assert_eq!(ids.resolve("fixture-c1"), None);
        assert_eq!(ids.resolve("3439"), None);
    }

    #[test]
    fn a_name_moves_to_the_newest_container() {
        let ids = DockerIds::new();
        ids.learn(&id(1), Some("web"));
        ids.learn(&id(2), Some("web"));
        assert_eq!(ids.resolve("web"), Some(id(2)));
        ids.forget(&id(1));
        assert_eq!(ids.resolve("web"), Some(id(2)));
    }

    #[test]
    fn bounded_oldest_first() {
        let ids = DockerIds::with_limits(3, 2);
        for n in 0..5 {
            ids.learn(&id(n), Some(&format!("c{n}")));
            ids.learn(&id(n), Some(&format!("c{n}")));
        }
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.resolve("c0"), None);
        assert_eq!(ids.resolve("c1"), None);
        assert_eq!(ids.resolve("c4"), Some(id(4)));
        assert!(ids.lock().order.len() <= 6);
        for n in 0..3 {
            ids.learn_exec(&id(100 + n), &id(n));
        }
        assert_eq!(ids.exec_container(&id(100)), None);
        assert_eq!(ids.exec_container(&id(102)), Some(id(2)));
    }
}
