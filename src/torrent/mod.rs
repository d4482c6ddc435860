//! Download and seed engine. To be written.
