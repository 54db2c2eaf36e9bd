//! hello, as a wasi:http handler: reads a name from the request body and greets it with `$GREETING`, as
//! examples/hello does through the curl interface. `make bench` serves it with `wasmtime serve` to compare
//! the agent with wasmtime's own HTTP server on the same machine.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mut body = Vec::new();
        if let Ok(incoming) = request.consume()
            && let Ok(stream) = incoming.stream()
        {
            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                body.extend_from_slice(&chunk);
            }
        }
        let body = String::from_utf8_lossy(&body);
        let name = match body.trim() {
            "" => "world",
            name => name,
        };
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
        let text = format!("{greeting}, {name}!\n");

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
