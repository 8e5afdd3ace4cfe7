//! Generated protocol types. `v2` is the RocketMQ 5 client protocol, wire-identical to the
//! published one; `store` and `namesrv` are our internal protocols.

pub mod v2 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("apache.rocketmq.v2");
}

/// Module tree mirroring the proto packages, so cross-package references resolve.
pub mod rmq {
    pub mod store {
        pub mod v1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("rmq.store.v1");
        }
    }
    pub mod namesrv {
        pub mod v1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("rmq.namesrv.v1");
        }
    }
    pub mod replication {
        pub mod v1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("rmq.replication.v1");
        }
    }
    pub mod state {
        pub mod v1 {
            #![allow(clippy::all, clippy::pedantic, missing_docs)]
            tonic::include_proto!("rmq.state.v1");
        }
    }
}

pub use rmq::namesrv::v1 as namesrv;
pub use rmq::replication::v1 as replication;
pub use rmq::state::v1 as state;
pub use rmq::store::v1 as store;

pub use prost;
pub use prost_types;
