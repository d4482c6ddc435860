//! uTP, the micro transport protocol (BEP 29): reliable ordered byte streams over UDP with
//! LEDBAT congestion control, on the node's one UDP port beside the DHT and QUIC.
//!
//! - [`packet`]: the wire codec and the classifier that tells uTP from KRPC and QUIC.
//! - [`conn`]: one connection as a pure state machine (time is an argument).
//! - [`ledbat`]: the delay-based congestion window.
//! - [`socket`]: the task that runs the connections of one UDP socket, and the streams.

pub mod conn;
pub mod ledbat;
pub mod packet;
pub mod socket;

pub use packet::is_utp;
pub use socket::{start, Feed, UtpBound, UtpConfig, UtpListener, UtpSocket, UtpStream, UTP_QUEUE};
