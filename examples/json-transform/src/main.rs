//! json-transform: reads a JSON body, upper-cases every string in it and wraps it with a few
//! fields. A body that is not JSON answers `400 Bad Request` with a JSON error.

use std::io::Read;

use serde_json::{Value, json};

fn upper(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Array(items) => Value::Array(items.into_iter().map(upper).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, upper(v))).collect()),
        other => other,
    }
}

fn count_strings(v: &Value) -> usize {
    match v {
        Value::String(_) => 1,
        Value::Array(items) => items.iter().map(count_strings).sum(),
        Value::Object(map) => map.values().map(count_strings).sum(),
        _ => 0,
    }
}

fn main() {
    let mut body = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut body);
    match serde_json::from_slice::<Value>(&body) {
        Ok(input) => {
            let strings = count_strings(&input);
            let reply = json!({ "transformed": true, "strings": strings, "data": upper(input) });
            print!("Content-Type: application/json\n\n{reply}");
        }
        Err(e) => {
            let reply = json!({ "error": format!("invalid JSON: {e}") });
            print!("Status: 400 Bad Request\nContent-Type: application/json\n\n{reply}");
        }
    }
}
