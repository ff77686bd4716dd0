//! The gateway's own HTTP/1.1 framing, on both sides of the proxy: the server
//! that reads callers' requests and writes the app's responses
//! ([`server`]), and the connection the proxy's transport drives to a host
//! ([`client`]), both over one codec ([`codec`]).
//!
//! Why not hyper: on the forwarded-run path hyper's fixed per-connection
//! buffers (a 16 KiB read buffer and an 8 KiB write buffer on each side, a
//! 9 KiB dispatch channel on the client) held four fifths of the memory of
//! an idle open stream, and its server and client dispatch cost more CPU per
//! request than nginx spends in total (see BENCHMARKS.md). Here a
//! connection holds no buffer while it waits, heads are parsed by `httparse`
//! (hyper's own parser) into `http` types without copying values, and a body
//! chunk goes from one socket to the other as the same `Bytes`.

pub mod client;
pub mod codec;
pub mod server;
