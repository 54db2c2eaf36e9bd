//! hello: reads a name from stdin (the request body) and greets it with `$GREETING`.
//! Plain output, no CGI headers: the runtime answers 200 with a default content type.

use std::io::Read;

fn main() {
    let mut body = String::new();
    // A body that is not UTF-8 greets "world" rather than failing.
    let _ = std::io::stdin().read_to_string(&mut body);
    let name = body.trim();
    let name = if name.is_empty() { "world" } else { name };
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    println!("{greeting}, {name}!");
}
