//! Whether, and for how long, an answer is stored: the route's rules, the status code, the answer's size, and the
//! backend's `cache-control`.

use std::time::Duration;

use http::HeaderName;
use strata_cache::Lifetime;
use tonic::Code;

use super::cache_control::CacheControl;
use crate::grpc::code;

/// How a cached route stores answers.
#[derive(Debug, Clone)]
pub struct StorageRules {
    /// Fresh lifetime of OK answers.
    pub ttl: Duration,
    /// Fresh lifetime of answers with a negative code (0: not stored).
    pub negative_ttl: Duration,
    /// Codes stored for `negative_ttl` (never one of [`code::NEVER_CACHED`]).
    pub negative_codes: Vec<Code>,
    /// After freshness, served stale while refreshing, this long.
    pub stale_while_revalidate: Duration,
    /// After freshness, served instead of a backend failure, this long.
    pub stale_if_error: Duration,
    /// Cap on any lifetime the backend's `cache-control` asks for.
    pub max_ttl: Duration,
    /// Larger answers are relayed, not stored.
    pub max_entry_bytes: u64,
    /// Response metadata never stored (set-cookie and the configured list).
    pub private_metadata: Vec<HeaderName>,
}

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Store it for this lifetime.
    Store(Lifetime),
    /// Relay it; do not store it.
    Relay,
    /// Relay it; it is too large to store.
    TooLarge,
}

impl StorageRules {
    /// Decides for an answer with `code`, a message of `message_len` bytes, and the backend's `cache_control`.
    pub fn decide(&self, code: Code, message_len: usize, cache_control: &CacheControl) -> Storage {
        let base = if code == Code::Ok {
            Lifetime {
                fresh: self.ttl,
                stale_while_revalidate: self.stale_while_revalidate,
                stale_if_error: self.stale_if_error,
            }
        } else if !self.negative_ttl.is_zero()
            && self.negative_codes.contains(&code)
            && !code::NEVER_CACHED.contains(&code)
        {
            Lifetime::fresh_for(self.negative_ttl)
        } else {
            return Storage::Relay;
        };
        if cache_control.no_store {
            return Storage::Relay;
        }
        if message_len as u64 > self.max_entry_bytes {
            return Storage::TooLarge;
        }
        let capped = |d: Duration| d.min(self.max_ttl);
        let mut lifetime = Lifetime {
            fresh: cache_control.max_age.map_or(base.fresh, capped),
            stale_while_revalidate: cache_control
                .stale_while_revalidate
                .map_or(base.stale_while_revalidate, capped),
            stale_if_error: cache_control
                .stale_if_error
                .map_or(base.stale_if_error, capped),
        };
        if lifetime.fresh.is_zero() {
            return Storage::Relay;
        }
        if cache_control.must_revalidate {
            // Once stale, this answer may not be used without the backend's word: no stale serving of any kind.
            lifetime.stale_while_revalidate = Duration::ZERO;
            lifetime.stale_if_error = Duration::ZERO;
        }
        Storage::Store(lifetime)
    }

    /// Whether `name` must never be stored or replayed to another client.
    pub fn is_private(&self, name: &str) -> bool {
        name == "set-cookie" || self.private_metadata.iter().any(|p| p.as_str() == name)
    }
}

/// Whether `code` means the backend failed (a stale answer may stand in, and nothing is stored).
pub fn is_backend_failure(code: Code) -> bool {
    code::BACKEND_FAILURE.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StorageRules {
        StorageRules {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            negative_codes: vec![Code::NotFound, Code::Unavailable],
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(60),
            max_ttl: Duration::from_secs(120),
            max_entry_bytes: 100,
            private_metadata: vec![HeaderName::from_static("x-session")],
        }
    }

    #[test]
    fn ok_answers_use_the_route_and_negative_answers_the_negative_ttl() {
        let none = CacheControl::default();
        assert_eq!(
            rules().decide(Code::Ok, 10, &none),
            Storage::Store(Lifetime {
                fresh: Duration::from_secs(30),
                stale_while_revalidate: Duration::from_secs(10),
                stale_if_error: Duration::from_secs(60),
            })
        );
        assert_eq!(
            rules().decide(Code::NotFound, 0, &none),
            Storage::Store(Lifetime::fresh_for(Duration::from_secs(5)))
        );
        // Listed, but never cached whatever the config says.
        assert_eq!(rules().decide(Code::Unavailable, 0, &none), Storage::Relay);
        assert_eq!(
            rules().decide(Code::PermissionDenied, 0, &none),
            Storage::Relay
        );
        assert_eq!(rules().decide(Code::Ok, 101, &none), Storage::TooLarge);
    }

    #[test]
    fn the_backend_can_shorten_lengthen_within_max_ttl_or_forbid() {
        let cc = |max_age: u64| CacheControl {
            max_age: Some(Duration::from_secs(max_age)),
            ..CacheControl::default()
        };
        let fresh = |s: Storage| match s {
            Storage::Store(l) => l.fresh,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fresh(rules().decide(Code::Ok, 1, &cc(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            fresh(rules().decide(Code::Ok, 1, &cc(9999))),
            Duration::from_secs(120)
        );
        assert_eq!(rules().decide(Code::Ok, 1, &cc(0)), Storage::Relay);
        let no_store = CacheControl {
            no_store: true,
            ..CacheControl::default()
        };
        assert_eq!(rules().decide(Code::Ok, 1, &no_store), Storage::Relay);
    }

    #[test]
    fn must_revalidate_turns_stale_serving_off() {
        let cc = CacheControl {
            must_revalidate: true,
            ..CacheControl::default()
        };
        assert_eq!(
            rules().decide(Code::Ok, 1, &cc),
            Storage::Store(Lifetime::fresh_for(Duration::from_secs(30)))
        );
    }

    #[test]
    fn private_metadata() {
        assert!(rules().is_private("set-cookie"));
        assert!(rules().is_private("x-session"));
        assert!(!rules().is_private("x-backend"));
    }
}
