//! Which JSON Schemas can be validated in bounded time and memory.
//!
//! A schema is a graph: `$ref`, `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else` and
//! `dependentSchemas` apply another subschema to the *same* place of the payload;
//! `properties`, `items` and the like apply one to a *child* of it. Validation walks that
//! graph along the payload, so it ends and stays small exactly when:
//!
//! 1. no chain of same-place edges loops (`a → b → a` via `$ref` recurses forever without
//!    consuming any payload: the schema that grew the process by 2 GB/s);
//! 2. the number of subschemas reached, counting every way of reaching them, stays small
//!    (nested `allOf: [{$ref: x}, {$ref: x}]` doubles it at every level);
//! 3. a recursive schema (a tree: `children.items → #`) reaches at most one recursive
//!    subschema per child of the payload, so the work per level does not multiply.
//!
//! Only references within the schema itself (`#` and `#/json/pointer`) are supported:
//! hookline never fetches a schema from elsewhere. Together with the payload's nesting
//! limit ([`MAX_PAYLOAD_DEPTH`]) and the body limit, this bounds the work of validating one
//! payload to a small multiple of its size. The checks run when a schema is stored and
//! again before each validation, so no stored schema can escape them.

use std::collections::HashMap;

use serde_json::Value;

/// A payload nested deeper than this cannot be validated (serde_json's recursion limit
/// of 128 is reached at 128 levels); without validation such payloads are stored and
/// delivered as they are.
pub const MAX_PAYLOAD_DEPTH: usize = 127;
/// Most subschemas in one schema.
pub const MAX_SUBSCHEMAS: usize = 10_000;
/// Most subschema evaluations the schema's graph may ask for, counting every path.
pub const MAX_EVALUATIONS: u64 = 50_000;
/// Deepest nesting of subschemas.
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// Keywords whose value is one subschema applied to the same place.
const SAME_ONE: &[&str] = &["not", "if", "then", "else"];
/// Keywords whose value is a list of subschemas applied to the same place.
const SAME_LIST: &[&str] = &["allOf", "anyOf", "oneOf"];
/// Keywords whose value maps names to subschemas applied to the same place.
const SAME_MAP: &[&str] = &["dependentSchemas", "dependencies"];
/// Keywords whose value is one subschema applied to any property's value (or name).
const ANY_PROPERTY: &[&str] = &[
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
];
/// Keywords whose value is one subschema applied to any array item (or the decoded
/// content, which is a fresh value of its own).
const ANY_ITEM: &[&str] = &[
    "additionalItems",
    "unevaluatedItems",
    "contains",
    "contentSchema",
];
/// Keywords holding subschemas that are only reached through `$ref`.
const DEFINITIONS: &[&str] = &["definitions", "$defs"];

/// Which child of the payload a descending edge applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Child {
    Property(String),
    AnyProperty,
    Index(usize),
    AnyItem,
}

#[derive(Default)]
struct Node {
    pointer: String,
    same: Vec<usize>,
    down: Vec<(Child, usize)>,
    refs: Vec<String>,
}

struct Graph<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
}

/// Checks that `schema` can be validated in bounded time and memory; the error says why
/// not, in words for the person who wrote the schema.
pub fn check(schema: &Value) -> Result<(), String> {
    let mut g = Graph {
        root: schema,
        nodes: Vec::new(),
        index: HashMap::new(),
    };
    g.add(schema, String::new(), 0)?;
    // Resolve references; their targets may be subschemas not yet walked.
    let mut i = 0;
    while i < g.nodes.len() {
        for r in std::mem::take(&mut g.nodes[i].refs) {
            let target = g.resolve(&r)?;
            g.nodes[i].same.push(target);
        }
        i += 1;
    }
    let order = g.no_same_place_loop()?;
    g.bounded_evaluations(&order)
}

impl<'a> Graph<'a> {
    fn add(&mut self, v: &'a Value, pointer: String, depth: usize) -> Result<usize, String> {
        if let Some(&i) = self.index.get(&pointer) {
            return Ok(i);
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "nests subschemas deeper than {MAX_SCHEMA_DEPTH} levels (at {})",
                show(&pointer)
            ));
        }
        if self.nodes.len() >= MAX_SUBSCHEMAS {
            return Err(format!("has more than {MAX_SUBSCHEMAS} subschemas"));
        }
        let me = self.nodes.len();
        self.nodes.push(Node {
            pointer: pointer.clone(),
            ..Node::default()
        });
        self.index.insert(pointer.clone(), me);
        let Some(obj) = v.as_object() else {
            return Ok(me); // `true` / `false`
        };
        let at = |key: &str| format!("{pointer}/{}", escape(key));
        for (key, value) in obj {
            let k = key.as_str();
            match k {
                "$ref" => {
                    let r = value
                        .as_str()
                        .ok_or_else(|| format!("{}: $ref must be a string", show(&at(k))))?;
                    self.nodes[me].refs.push(r.to_string());
                }
                "$dynamicRef" | "$recursiveRef" => {
                    return Err(format!(
                        "{}: {k} is not supported; use $ref to a JSON pointer within the schema",
                        show(&at(k))
                    ))
                }
                "$id" | "id" if !pointer.is_empty() && value.is_string() => {
                    return Err(format!(
                        "{}: $id is only supported at the top of the schema",
                        show(&at(k))
                    ))
                }
                _ if SAME_ONE.contains(&k) && is_schema(value) => {
                    let c = self.add(value, at(k), depth + 1)?;
                    self.nodes[me].same.push(c);
                }
                _ if SAME_LIST.contains(&k) => {
                    for (i, s) in value.as_array().into_iter().flatten().enumerate() {
                        if is_schema(s) {
                            let c = self.add(s, format!("{}/{i}", at(k)), depth + 1)?;
                            self.nodes[me].same.push(c);
                        }
                    }
                }
                _ if SAME_MAP.contains(&k) => {
                    for (name, s) in value.as_object().into_iter().flatten() {
                        if s.is_object() {
                            let c =
                                self.add(s, format!("{}/{}", at(k), escape(name)), depth + 1)?;
                            self.nodes[me].same.push(c);
                        }
                    }
                }
                "properties" => {
                    for (name, s) in value.as_object().into_iter().flatten() {
                        if is_schema(s) {
                            let c =
                                self.add(s, format!("{}/{}", at(k), escape(name)), depth + 1)?;
                            self.nodes[me].down.push((Child::Property(name.clone()), c));
                        }
                    }
                }
                "patternProperties" => {
                    for (name, s) in value.as_object().into_iter().flatten() {
                        if is_schema(s) {
                            let c =
                                self.add(s, format!("{}/{}", at(k), escape(name)), depth + 1)?;
                            self.nodes[me].down.push((Child::AnyProperty, c));
                        }
                    }
                }
                "items" | "prefixItems" => match value {
                    Value::Array(list) => {
                        for (i, s) in list.iter().enumerate() {
                            if is_schema(s) {
                                let c = self.add(s, format!("{}/{i}", at(k)), depth + 1)?;
                                self.nodes[me].down.push((Child::Index(i), c));
                            }
                        }
                    }
                    s if is_schema(s) => {
                        let c = self.add(s, at(k), depth + 1)?;
                        self.nodes[me].down.push((Child::AnyItem, c));
                    }
                    _ => {}
                },
                _ if ANY_PROPERTY.contains(&k) && is_schema(value) => {
                    let c = self.add(value, at(k), depth + 1)?;
                    self.nodes[me].down.push((Child::AnyProperty, c));
                }
                _ if ANY_ITEM.contains(&k) && is_schema(value) => {
                    let c = self.add(value, at(k), depth + 1)?;
                    self.nodes[me].down.push((Child::AnyItem, c));
                }
                _ if DEFINITIONS.contains(&k) => {
                    for (name, s) in value.as_object().into_iter().flatten() {
                        if is_schema(s) {
                            self.add(s, format!("{}/{}", at(k), escape(name)), depth + 1)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(me)
    }

    /// The node a `$ref` names, walking its target if it was not walked yet.
    fn resolve(&mut self, r: &str) -> Result<usize, String> {
        let Some(fragment) = r.strip_prefix('#') else {
            return Err(format!(
                "$ref {r:?} points outside the schema; only references within it (\"#\" or \"#/...\") are supported"
            ));
        };
        let fragment = percent_encoding::percent_decode_str(fragment)
            .decode_utf8()
            .map_err(|_| format!("$ref {r:?} is not a valid JSON pointer"))?
            .into_owned();
        if !fragment.is_empty() && !fragment.starts_with('/') {
            return Err(format!(
                "$ref {r:?} names an anchor; only JSON pointers (\"#/...\") are supported"
            ));
        }
        let target = self
            .root
            .pointer(&fragment)
            .ok_or_else(|| format!("$ref {r:?} points to nothing in the schema"))?;
        if !is_schema(target) {
            return Err(format!("$ref {r:?} does not point to a schema"));
        }
        let depth = fragment.matches('/').count();
        self.add(target, fragment, depth)
    }

    /// Rule 1: depth-first search for a cycle of same-place edges. Returns the nodes in
    /// the order the search finished them: each after everything its same-place edges
    /// reach.
    fn no_same_place_loop(&self) -> Result<Vec<usize>, String> {
        let mut finished = Vec::with_capacity(self.nodes.len());
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut mark = vec![Mark::New; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if mark[start] != Mark::New {
                continue;
            }
            // (node, next edge to follow)
            let mut stack = vec![(start, 0usize)];
            mark[start] = Mark::OnPath;
            while let Some(&mut (n, ref mut edge)) = stack.last_mut() {
                if let Some(&next) = self.nodes[n].same.get(*edge) {
                    *edge += 1;
                    match mark[next] {
                        Mark::New => {
                            mark[next] = Mark::OnPath;
                            stack.push((next, 0));
                        }
                        Mark::OnPath => {
                            let from = stack.iter().position(|(s, _)| *s == next).unwrap_or(0);
                            let chain: Vec<String> = stack[from..]
                                .iter()
                                .map(|(s, _)| show(&self.nodes[*s].pointer))
                                .chain(std::iter::once(show(&self.nodes[next].pointer)))
                                .collect();
                            return Err(format!(
                                "has a reference loop that never reaches into the payload ({}), so it cannot be validated",
                                chain.join(" → ")
                            ));
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[n] = Mark::Done;
                    finished.push(n);
                    stack.pop();
                }
            }
        }
        Ok(finished)
    }

    /// Rules 2 and 3, on the graph's strongly connected components (recursion through
    /// `properties`/`items` makes components of several nodes).
    fn bounded_evaluations(&self, order: &[usize]) -> Result<(), String> {
        let comp = self.components();
        let n_comp = comp.iter().copied().max().map_or(0, |m| m + 1);
        let mut size = vec![0u64; n_comp];
        for &c in &comp {
            size[c] += 1;
        }
        let recursive: Vec<bool> = (0..n_comp)
            .map(|c| {
                size[c] > 1
                    || self
                        .nodes
                        .iter()
                        .enumerate()
                        .any(|(i, n)| comp[i] == c && n.down.iter().any(|(_, t)| comp[*t] == c))
            })
            .collect();
        // Rule 3: from each recursive node, count the ways (same-place paths, then one
        // step down) of reaching its own component for one child of the payload. A path
        // that leaves the component cannot come back to it, so only edges within count;
        // successors come before their predecessors in `order`.
        let mut ways: Vec<HashMap<Child, u64>> = vec![HashMap::new(); self.nodes.len()];
        for &i in order {
            let c = comp[i];
            if !recursive[c] {
                continue;
            }
            let node = &self.nodes[i];
            let mut per_child: HashMap<Child, u64> = HashMap::new();
            for (child, t) in &node.down {
                if comp[*t] == c {
                    *per_child.entry(child.clone()).or_default() += 1;
                }
            }
            for &j in &node.same {
                if comp[j] == c {
                    for (child, w) in &ways[j] {
                        let e = per_child.entry(child.clone()).or_default();
                        *e = e.saturating_add(*w);
                    }
                }
            }
            let any_prop = per_child.get(&Child::AnyProperty).copied().unwrap_or(0);
            let any_item = per_child.get(&Child::AnyItem).copied().unwrap_or(0);
            let worst = per_child
                .iter()
                .map(|(child, w)| match child {
                    Child::Property(_) => w.saturating_add(any_prop),
                    Child::Index(_) => w.saturating_add(any_item),
                    _ => *w,
                })
                .max()
                .unwrap_or(0);
            if worst > 1 {
                return Err(format!(
                    "recurses into the payload in {worst} ways at once from {} (through allOf/anyOf/oneOf or overlapping properties), so the work grows exponentially with the payload's depth",
                    show(&node.pointer)
                ));
            }
            ways[i] = per_child;
        }
        // Rule 2: paths from the top through the component graph, each component counted
        // with its size (a recursive component is walked once per payload level).
        let mut order: Vec<usize> = (0..n_comp).collect();
        // Tarjan numbers components in reverse topological order: the root's is last.
        order.reverse();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n_comp];
        for (i, n) in self.nodes.iter().enumerate() {
            for t in n.same.iter().chain(n.down.iter().map(|(_, t)| t)) {
                if comp[*t] != comp[i] {
                    edges[comp[i]].push(comp[*t]);
                }
            }
        }
        let mut paths = vec![0u64; n_comp];
        paths[comp[0]] = 1;
        let mut total = 0u64;
        for c in order {
            if paths[c] == 0 {
                continue;
            }
            total = total.saturating_add(paths[c].saturating_mul(size[c]));
            if total > MAX_EVALUATIONS {
                return Err(format!(
                    "asks for more than {MAX_EVALUATIONS} subschema evaluations (allOf/anyOf/oneOf/$ref reaching the same subschemas many times over)"
                ));
            }
            for &t in &edges[c] {
                paths[t] = paths[t].saturating_add(paths[c]);
            }
        }
        Ok(())
    }

    /// Tarjan's strongly connected components over all edges; component numbers come out
    /// in reverse topological order.
    fn components(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let succ = |i: usize| -> Vec<usize> {
            self.nodes[i]
                .same
                .iter()
                .copied()
                .chain(self.nodes[i].down.iter().map(|(_, t)| *t))
                .collect()
        };
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0usize; n];
        let mut on_stack = vec![false; n];
        let mut comp = vec![usize::MAX; n];
        let mut stack = Vec::new();
        let mut next_index = 0;
        let mut next_comp = 0;
        for start in 0..n {
            if index[start] != usize::MAX {
                continue;
            }
            // Iterative DFS: (node, successors, next successor).
            let mut work = vec![(start, succ(start), 0usize)];
            index[start] = next_index;
            low[start] = next_index;
            next_index += 1;
            stack.push(start);
            on_stack[start] = true;
            while let Some((v, succs, pos)) = work.last_mut() {
                let v = *v;
                if let Some(&w) = succs.get(*pos) {
                    *pos += 1;
                    if index[w] == usize::MAX {
                        index[w] = next_index;
                        low[w] = next_index;
                        next_index += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        work.push((w, succ(w), 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                } else {
                    work.pop();
                    if let Some((parent, _, _)) = work.last() {
                        low[*parent] = low[*parent].min(low[v]);
                    }
                    if low[v] == index[v] {
                        while let Some(w) = stack.pop() {
                            on_stack[w] = false;
                            comp[w] = next_comp;
                            if w == v {
                                break;
                            }
                        }
                        next_comp += 1;
                    }
                }
            }
        }
        comp
    }
}

fn is_schema(v: &Value) -> bool {
    v.is_object() || v.is_boolean()
}

/// A JSON pointer token, escaped.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A pointer as a reader sees it in a `$ref`.
fn show(pointer: &str) -> String {
    format!("#{pointer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(schema: Value) -> String {
        check(&schema).expect_err("refused")
    }

    #[test]
    fn ordinary_schemas_pass() {
        for s in [
            json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}),
            json!(true),
            json!({"$defs": {"money": {"type": "object", "properties": {"amount": {"type": "number"}}}},
                   "properties": {"total": {"$ref": "#/$defs/money"}, "tax": {"$ref": "#/$defs/money"}},
                   "anyOf": [{"required": ["total"]}, {"required": ["tax"]}]}),
            json!({"$id": "https://example.com/order.json", "type": "object"}),
            json!({"properties": {"a b": {"type": "string"}}, "$ref": "#/properties/a%20b"}),
        ] {
            check(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn recursive_trees_pass() {
        // A tree, a binary tree and a linked list recurse one way per child.
        for s in [
            json!({"type": "object", "properties": {"name": {"type": "string"},
                   "children": {"type": "array", "items": {"$ref": "#"}}}}),
            json!({"properties": {"left": {"$ref": "#"}, "right": {"$ref": "#"}}}),
            json!({"definitions": {"node": {"properties": {"next": {"$ref": "#/definitions/node"}}}},
                   "$ref": "#/definitions/node"}),
        ] {
            check(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn reference_loops_are_refused() {
        let e = refused(json!({"$ref": "#/definitions/a", "definitions": {
            "a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}}}));
        assert!(e.contains("loop"), "{e}");
        assert!(
            e.contains("#/definitions/a") && e.contains("#/definitions/b"),
            "{e}"
        );
        assert!(refused(json!({"$ref": "#"})).contains("loop"));
        assert!(refused(json!({"allOf": [{"$ref": "#"}]})).contains("loop"));
        assert!(refused(json!({"not": {"anyOf": [{"$ref": "#"}]}})).contains("loop"));
    }

    #[test]
    fn exponential_schemas_are_refused() {
        // Each level reaches the next twice: 2^40 evaluations without recursion.
        let mut defs = serde_json::Map::new();
        for i in 0..40 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"properties": {"a": {"allOf": [{"$ref": next}, {"$ref": next}]}}}),
            );
        }
        defs.insert("d40".into(), json!({"type": "string"}));
        let e = refused(json!({"$ref": "#/$defs/d0", "$defs": defs}));
        assert!(e.contains("evaluations"), "{e}");
        // Recursion that doubles at every level of the payload.
        let e = refused(json!({"properties": {"a": {"allOf": [{"$ref": "#"}, {"$ref": "#"}]}}}));
        assert!(e.contains("exponentially"), "{e}");
        let e = refused(
            json!({"properties": {"a": {"$ref": "#"}}, "additionalProperties": {"$ref": "#"}}),
        );
        assert!(e.contains("exponentially"), "{e}");
    }

    #[test]
    fn references_outside_or_to_nothing_are_refused() {
        assert!(refused(json!({"$ref": "https://example.com/s.json"})).contains("outside"));
        assert!(refused(json!({"$ref": "#/definitions/missing"})).contains("nothing"));
        assert!(refused(json!({"$ref": "#anchor"})).contains("anchor"));
        assert!(refused(json!({"$ref": "#/required", "required": ["a"]}))
            .contains("not point to a schema"));
        assert!(refused(json!({"$dynamicRef": "#meta"})).contains("not supported"));
        assert!(
            refused(json!({"properties": {"a": {"$id": "x", "type": "string"}}})).contains("$id")
        );
    }

    #[test]
    fn deep_or_huge_schemas_are_refused() {
        let mut s = json!({"type": "string"});
        for _ in 0..70 {
            s = json!({"properties": {"a": s}});
        }
        assert!(refused(s).contains("deeper"));
    }
}
