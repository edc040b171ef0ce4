//! Which tensors are keys, values and queries, and which key goes with
//! which value: by the last dot-separated part of the name, or by globs
//! that override it; pairs share the name without that part.

use std::collections::HashMap;

use glob::Pattern;

use super::NamedTensor;
use crate::{Error, Result};

/// What a tensor is to the KV codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A key cache: coded, centred per channel.
    Key,
    /// A value cache: coded.
    Value,
    /// Queries: weights for the allocator only, never stored.
    Query,
    /// Anything else: carried losslessly.
    Other,
}

impl Role {
    fn plural(self) -> &'static str {
        match self {
            Role::Key => "keys",
            Role::Value => "values",
            Role::Query => "queries",
            Role::Other => "others",
        }
    }
}

/// The role a name gives: its last dot-separated part `k`, `key`, `keys`,
/// `k_cache` or `key_cache` is a key; `v`, `value`, `values`, `v_cache` or
/// `value_cache` a value; `q`, `query` or `queries` a query.
pub fn role_from_name(name: &str) -> Role {
    let last = name.rsplit('.').next().unwrap_or(name);
    match last {
        "k" | "key" | "keys" | "k_cache" | "key_cache" => Role::Key,
        "v" | "value" | "values" | "v_cache" | "value_cache" => Role::Value,
        "q" | "query" | "queries" => Role::Query,
        _ => Role::Other,
    }
}

/// Globs (`--keys`, `--values`, `--queries`) that give tensors a role
/// whatever their names say.
#[derive(Debug, Clone, Default)]
pub struct RoleGlobs {
    by_role: Vec<(Role, String, Pattern)>,
}

impl RoleGlobs {
    /// Compiles the globs of each role (shell style: `*`, `?`, `[…]`).
    pub fn new(keys: &[&str], values: &[&str], queries: &[&str]) -> Result<RoleGlobs> {
        let mut by_role = Vec::new();
        for (role, globs) in [
            (Role::Key, keys),
            (Role::Value, values),
            (Role::Query, queries),
        ] {
            for g in globs {
                let p = Pattern::new(g).map_err(|e| {
                    Error::InvalidArgument(format!("--{} glob {g:?}: {e}", role.plural()))
                })?;
                by_role.push((role, g.to_string(), p));
            }
        }
        Ok(RoleGlobs { by_role })
    }

    /// The role of the tensor `name`: a glob's when one matches, else the
    /// name's ([`role_from_name`]). Globs of two roles matching is an error.
    pub fn role(&self, name: &str) -> Result<Role> {
        let mut found: Option<(Role, &str)> = None;
        for (role, text, p) in &self.by_role {
            if !p.matches(name) {
                continue;
            }
            match found {
                Some((r, other)) if r != *role => {
                    return Err(Error::InvalidArgument(format!(
                        "tensor {name:?} has an ambiguous role: it matches --{} {other:?} and --{} {text:?}",
                        r.plural(),
                        role.plural()
                    )));
                }
                Some(_) => {}
                None => found = Some((*role, text)),
            }
        }
        Ok(found.map_or_else(|| role_from_name(name), |(r, _)| r))
    }
}

/// A key, its value and its queries: tensors whose names agree but for the
/// last dot-separated part. Fields are indices into the tensor list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The shared name without its last part (`""` for names with no dot).
    pub prefix: String,
    /// The key tensor, if any.
    pub key: Option<usize>,
    /// The value tensor, if any.
    pub value: Option<usize>,
    /// The query tensor, if any (only with a key).
    pub query: Option<usize>,
}

/// The role of every tensor and the groups of keys, values and queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// One role per tensor, in the tensors' order.
    pub roles: Vec<Role>,
    /// Groups in the order of their first tensor.
    pub groups: Vec<Group>,
}

/// Gives each tensor its role and groups keys with values and queries.
/// Errors (each naming the tensors involved): an ambiguous role, two
/// tensors of one role in a group, a key, value or query that is not
/// F32/F16/BF16, a key and value of different shapes, a query without a
/// key, and no key or value at all.
pub fn assign(tensors: &[NamedTensor], globs: &RoleGlobs) -> Result<Assignment> {
    let mut roles = Vec::with_capacity(tensors.len());
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tensors.iter().enumerate() {
        let role = globs.role(&t.name)?;
        roles.push(role);
        if role == Role::Other {
            continue;
        }
        t.require_float()?;
        let prefix = t.name.rsplit_once('.').map_or("", |(p, _)| p);
        let g = *index.entry(prefix).or_insert_with(|| {
            groups.push(Group {
                prefix: prefix.to_string(),
                key: None,
                value: None,
                query: None,
            });
            groups.len() - 1
        });
        let group = &mut groups[g];
        let slot = match role {
            Role::Key => &mut group.key,
            Role::Value => &mut group.value,
            _ => &mut group.query,
        };
        if let Some(j) = *slot {
            return Err(Error::InvalidArgument(format!(
                "tensors {:?} and {:?} are both {} of group {:?}: ambiguous role (use --keys/--values/--queries)",
                tensors[j].name,
                t.name,
                role.plural(),
                group.prefix
            )));
        }
        *slot = Some(i);
    }
    if !groups.iter().any(|g| g.key.is_some() || g.value.is_some()) {
        return Err(Error::InvalidArgument(
            "no key or value tensors (names end in .k/.key/.keys/.k_cache/.key_cache or \
             .v/.value/.values/.v_cache/.value_cache; use --keys/--values)"
                .into(),
        ));
    }
    for g in &groups {
        if let (Some(q), None) = (g.query, g.key) {
            return Err(Error::InvalidArgument(format!(
                "query tensor {:?} has no key in its group {:?}",
                tensors[q].name, g.prefix
            )));
        }
        if let (Some(k), Some(v)) = (g.key, g.value) {
            let (k, v) = (&tensors[k], &tensors[v]);
            if k.shape != v.shape {
                return Err(Error::Shape(format!(
                    "key {:?} has shape {:?} but value {:?} has shape {:?}; a key and its value must have the same shape",
                    k.name, k.shape, v.name, v.shape
                )));
            }
        }
    }
    Ok(Assignment { roles, groups })
}
