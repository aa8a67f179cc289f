//! Protobuf definitions of Strata: the cache entry encoding, the admin API, and the sample `demo.v1.Catalog` service.
//!
//! Generated code only; no logic lives here.

/// The cache entry stored in L1 and L2, and the cache option a method may carry (`strata.cache.v1`).
pub mod cache {
    /// Version 1 of the entry encoding.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/strata.cache.v1.rs"));
    }
}

/// Strata's admin API (`strata.admin.v1.CacheAdmin`), served on the admin listener.
pub mod admin {
    /// Version 1 of the admin API.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/strata.admin.v1.rs"));
    }
}

/// The sample lookup service (`demo.v1.Catalog`) and its counters (`demo.v1.CatalogStats`).
pub mod demo {
    /// Version 1 of the sample service.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/demo.v1.rs"));
    }
}

/// The full name of the method option carrying a [`cache::v1::CachePolicy`] (`options.proto`).
pub const CACHE_OPTION: &str = "strata.cache.v1.cache";

/// The encoded `FileDescriptorSet` of every proto in this crate, imports included (for server reflection, and for
/// reading the cache option off a backend's descriptors).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
