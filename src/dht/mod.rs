//! Mainline DHT (BEP 5). To be written.
