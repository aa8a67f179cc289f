//! The methods a backend was seen to answer with a stream, though no descriptor said so: from then on their calls
//! are carried through untouched instead of being read as unary first.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// At most this many methods are remembered: the paths come from clients, though only a backend that streams its
/// answer adds one.
const MAX_REMEMBERED: usize = 4096;

/// Methods seen to stream, read on every cached call of a method without a descriptor, written once per method.
#[derive(Debug, Default)]
pub struct StreamsSeen {
    paths: ArcSwap<HashSet<Box<str>>>,
}

impl StreamsSeen {
    /// Whether `path` was seen to stream.
    pub fn contains(&self, path: &str) -> bool {
        let paths = self.paths.load();
        !paths.is_empty() && paths.contains(path)
    }

    /// Remembers that a backend answered `path` with a stream (while fewer than the limit are remembered).
    pub fn learn(&self, path: &str) {
        self.paths.rcu(|paths| {
            if paths.contains(path) || paths.len() >= MAX_REMEMBERED {
                return Arc::clone(paths);
            }
            let mut grown = HashSet::clone(paths);
            grown.insert(path.into());
            Arc::new(grown)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_paths_up_to_the_limit() {
        let seen = StreamsSeen::default();
        assert!(!seen.contains("/a.B/C"));
        seen.learn("/a.B/C");
        seen.learn("/a.B/C");
        assert!(seen.contains("/a.B/C"));
        for i in 0..MAX_REMEMBERED + 10 {
            seen.learn(&format!("/a.B/M{i}"));
        }
        assert_eq!(seen.paths.load().len(), MAX_REMEMBERED);
        assert!(seen.contains("/a.B/C"));
    }
}
