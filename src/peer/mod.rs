//! Peer wire protocol (BEP 3, 6, 9, 10, 11). To be written.
