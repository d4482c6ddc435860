//! The test surface: the codecs, pure state machines and helpers behind the embedding API
//! that this package's integration tests, fuzz targets, examples and benchmarks drive
//! directly. Compiled only with the `internals` feature (the package's own test targets
//! turn it on through a dev-dependency on itself); everything here may change at any time.
//!
//! Each module mirrors the room of the same name and re-exports only what a test needs,
//! so the rooms themselves stay private to the crate.

pub mod bencode {
    pub use crate::bencode::{Limits, Value};
}

pub mod cli {
    /// The clap model, for tests that walk every documented flag.
    pub use crate::cli::Cli;
}

pub mod dht {
    pub use crate::dht::{krpc, Dht, DhtConfig, LookupSummary};
}

pub mod dial {
    pub use crate::dial::{DialConfig, Dialer, Encryption, TransportMode};
}

pub mod http {
    pub use crate::http::{chunked, get_url, head, tls, HttpError};
}

pub mod id {
    pub use crate::id::{Id20, InfoHash};
}

pub mod lsd {
    pub use crate::lsd::announce::{
        encode, parse, Announce, AnnounceError, GROUP_V4, GROUP_V6, MAX_DATAGRAM, MAX_HASHES,
    };
}

pub mod magnet {
    pub use crate::magnet::{Magnet, PeerAddr};
}

pub mod metainfo {
    pub use crate::metainfo::{create, CreateOptions, Metainfo, MetainfoError, MAX_FILES};
}

pub mod net {
    pub use crate::net::{quic, utp, Net, Stream};
}

pub mod peer {
    pub use crate::peer::{
        extension, holepunch, metadata, mse, wire, BlockRef, Encryption, ExtHandshake, Message,
        MetadataMsg, MsePolicy, PeerConn, PeerError, PexMsg,
    };
}

pub mod portmap {
    pub use crate::portmap::{
        gateway, igd, natpmp, pcp, ssdp, xml, MapConfig, MapStatus, PortMapping, Proto, Protocol,
        State,
    };
}

pub mod session {
    pub use crate::session::{
        backlog, fetch_metadata, fetch_metadata_stats, serve_metadata, AddTorrent, FetchConfig,
        FetchError, Phase, Session, SessionConfig, Source, StorageSpec, TorrentHandle,
    };
}

pub mod sim {
    pub use crate::sim::{arrival_offsets, make_metainfo, run, Report, Scenario};
}

pub mod torrent {
    pub use crate::torrent::{bitfield, layout, picker, resume, storage, verify, Layout};
}

pub mod tracker {
    pub use crate::tracker::{
        client, http_proto, store, tier, udp_proto, AnnounceRequest, ClientConfig, Event,
        ScrapeStats, ServerConfig, TrackerClient, TrackerError, TrackerEvent, TrackerServer,
        TrackerSet,
    };
}

pub mod webseed {
    pub use crate::webseed::{piece_ranges, WebSeedError, WebSeedFetcher};
}
