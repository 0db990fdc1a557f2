//! Pretty-printing a payload for people while keeping it the payload that was sent.
//!
//! `serde_json::to_string_pretty` would sort an object's keys (the workspace's
//! `serde_json` has no `preserve_order`, and turning it on would change every map in
//! the API), but a support engineer compares the page with what their code sent, key
//! for key. So the stored text is re-indented token by token instead of re-serialized:
//! keys stay in order, numbers keep their spelling, strings are copied untouched.

/// `json` (valid JSON, as the API returns it) indented by two spaces per level.
pub fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn keeps_key_order_numbers_and_strings() {
        let raw = r#"{"z":1,"a":{"list":[1.50,2e3,{}],"empty":[]},"s":"a, b: {c} \"q\" \\"}"#;
        assert_eq!(
            pretty(raw),
            "{\n  \"z\": 1,\n  \"a\": {\n    \"list\": [\n      1.50,\n      2e3,\n      {}\n    ],\n    \"empty\": []\n  },\n  \"s\": \"a, b: {c} \\\"q\\\" \\\\\"\n}"
        );
    }

    #[test]
    fn reindents_already_pretty_json_and_stays_parseable() {
        let raw = "{ \"a\" : [ 1 , 2 ] ,\n \"b\" : { } }";
        let out = pretty(raw);
        assert_eq!(out, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}");
        let a: serde_json::Value = serde_json::from_str(raw).unwrap();
        let b: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b);
    }
}
