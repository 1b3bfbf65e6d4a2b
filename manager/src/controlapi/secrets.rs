//! Secrets and configs in the Control API: create, update (labels only),
//! inspect, list, remove; the references a service's containers make to
//! them; and the rule that one in use cannot be removed.
//!
//! Both kinds share the code through [`FileObject`]; they differ in three
//! ways: a secret's data is sealed by the cluster key in Raft, it is never
//! returned by the API, and it appears under /run/secrets in a container
//! while a config appears at an absolute path.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::defaults as d;
use shoal_proto::{
    Config, ContainerSpec, FileObjectSpec, FileReference, Meta, Object, ObjectKind, PodTemplate,
    Secret, ServiceSpec,
};
use tonic::Status;

use crate::ids::new_id;
use crate::keys::ClusterKey;
use crate::objects::{touch, version};
use crate::store::{delete, put, StoreData};
use shoal_proto::now_ms;

/// What secrets and configs have in common, so one implementation serves both.
pub trait FileObject: Clone + Into<Object> + Send + Sync + 'static {
    /// "secret" or "config", for messages and commands.
    const KIND: &'static str;
    const OBJECT_KIND: ObjectKind;
    /// Largest data accepted.
    const MAX_BYTES: usize;
    /// Whether the data is sealed at rest and hidden from responses.
    const SEALED: bool;

    fn new(id: String, meta: Meta, spec: FileObjectSpec) -> Self;
    fn id(&self) -> &str;
    fn meta(&self) -> &Option<Meta>;
    fn spec(&self) -> Option<&FileObjectSpec>;
    fn spec_mut(&mut self) -> &mut Option<FileObjectSpec>;
    fn meta_mut(&mut self) -> &mut Option<Meta>;
    fn all(d: &StoreData) -> &BTreeMap<String, Self>;
    /// The container's references to objects of this kind.
    fn refs(c: &ContainerSpec) -> &[FileReference];
    fn refs_mut(c: &mut ContainerSpec) -> &mut Vec<FileReference>;

    fn name(&self) -> &str {
        self.spec().map_or("", |s| s.name.as_str())
    }
}

macro_rules! file_object {
    ($ty:ident, $kind:literal, $ok:ident, $max:expr, $sealed:expr, $map:ident, $refs:ident) => {
        impl FileObject for $ty {
            const KIND: &'static str = $kind;
            const OBJECT_KIND: ObjectKind = ObjectKind::$ok;
            const MAX_BYTES: usize = $max;
            const SEALED: bool = $sealed;

            fn new(id: String, meta: Meta, spec: FileObjectSpec) -> Self {
                $ty {
                    id,
                    meta: Some(meta),
                    spec: Some(spec),
                }
            }
            fn id(&self) -> &str {
                &self.id
            }
            fn meta(&self) -> &Option<Meta> {
                &self.meta
            }
            fn spec(&self) -> Option<&FileObjectSpec> {
                self.spec.as_ref()
            }
            fn spec_mut(&mut self) -> &mut Option<FileObjectSpec> {
                &mut self.spec
            }
            fn meta_mut(&mut self) -> &mut Option<Meta> {
                &mut self.meta
            }
            fn all(d: &StoreData) -> &BTreeMap<String, Self> {
                &d.$map
            }
            fn refs(c: &ContainerSpec) -> &[FileReference] {
                &c.$refs
            }
            fn refs_mut(c: &mut ContainerSpec) -> &mut Vec<FileReference> {
                &mut c.$refs
            }
        }
    };
}

file_object!(
    Secret,
    "secret",
    Secret,
    d::SECRET_MAX_BYTES,
    true,
    secrets,
    secrets
);
file_object!(
    Config,
    "config",
    Config,
    d::CONFIG_MAX_BYTES,
    false,
    configs,
    configs
);

/// Docker's rule for secret and config names: 1-64 characters, letters,
/// digits, `-`, `_`, `.`, starting and ending with a letter or digit.
fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = !name.is_empty()
        && name.len() <= 64
        && alnum(name.chars().next())
        && alnum(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} is not a valid {kind} name (1-64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
    }
}

/// Checks a spec from a create request; the error names the field.
pub fn validate_spec<T: FileObject>(spec: &FileObjectSpec) -> Result<(), String> {
    validate_name(T::KIND, &spec.name)?;
    if spec.data.is_empty() {
        return Err(format!("data: {} {} is empty", T::KIND, spec.name));
    }
    if spec.data.len() > T::MAX_BYTES {
        return Err(format!(
            "data: {} {} is {} bytes, more than the {} allowed",
            T::KIND,
            spec.name,
            spec.data.len(),
            T::MAX_BYTES
        ));
    }
    Ok(())
}

/// Finds an object by exact name, exact id, or unique id prefix.
pub fn find<'a, T: FileObject>(d: &'a StoreData, name_or_id: &str) -> Result<&'a T, Status> {
    if name_or_id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{}: no name or id given",
            T::KIND
        )));
    }
    let all = T::all(d);
    if let Some(o) = all.values().find(|o| o.name() == name_or_id) {
        return Ok(o);
    }
    if let Some(o) = all.get(name_or_id) {
        return Ok(o);
    }
    let matches: Vec<&T> = all
        .values()
        .filter(|o| o.id().starts_with(name_or_id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Status::not_found(format!(
            "{} {name_or_id} not found",
            T::KIND
        ))),
        _ => Err(Status::invalid_argument(format!(
            "{} {name_or_id} is ambiguous: {} {}s have ids starting with it",
            T::KIND,
            matches.len(),
            T::KIND
        ))),
    }
}

/// The names of the services that use object `id`: a deployment whose
/// current template refers to it, or one with a revision that still has
/// pods referring to it (they may still be starting or stopping). Pods of a
/// removed service count under the removed deployment's id.
pub fn users<T: FileObject>(d: &StoreData, id: &str) -> Vec<String> {
    let uses = |c: &Option<ContainerSpec>| {
        c.as_ref()
            .is_some_and(|c| T::refs(c).iter().any(|r| r.id == id))
    };
    let mut names = BTreeSet::new();
    let name_of = |dep_id: &str| {
        d.deployments
            .get(dep_id)
            .and_then(|x| x.spec.as_ref())
            .map_or_else(
                || format!("{dep_id} (removed; its pods are still stopping, try again shortly)"),
                |s| s.name.clone(),
            )
    };
    for dep in d.deployments.values() {
        let template = dep.spec.as_ref().and_then(|s| s.template.as_ref());
        if template.is_some_and(|t| uses(&t.container)) {
            names.insert(name_of(&dep.id));
        }
    }
    let with_pods: BTreeSet<&str> = d.pods.values().map(|p| p.replica_set_id.as_str()).collect();
    for rs in d.replica_sets.values() {
        let template = rs.template.as_ref();
        if with_pods.contains(rs.id.as_str()) && template.is_some_and(|t| uses(&t.container)) {
            names.insert(name_of(&rs.deployment_id));
        }
    }
    names.into_iter().collect()
}

/// Where a reference's file appears in the container, checked.
fn target_path<T: FileObject>(r: &FileReference) -> Result<String, String> {
    let t = r.target.trim();
    let what = || {
        format!(
            "{}s: target {:?} of {} {}",
            T::KIND,
            r.target,
            T::KIND,
            r.name
        )
    };
    if t.split('/').any(|part| part == "..") {
        return Err(format!("{}: must not contain '..'", what()));
    }
    if t.ends_with('/') || t.contains('\0') {
        return Err(format!("{}: is not a file path", what()));
    }
    Ok(r.container_path(T::SEALED))
}

/// Resolves a container's references of kind `T` by name (or id when no
/// name is given) to stored objects, fills defaults (target = the name,
/// mode 0444), and refuses unknown objects and duplicate targets.
fn resolve<T: FileObject>(d: &StoreData, c: &mut ContainerSpec) -> Result<(), String> {
    let mut targets = BTreeSet::new();
    for r in T::refs_mut(c).iter_mut() {
        let key = if r.name.is_empty() { &r.id } else { &r.name };
        let obj = T::all(d)
            .values()
            .find(|o| o.name() == key)
            .or_else(|| T::all(d).get(key))
            .ok_or_else(|| {
                format!(
                    "{k}s: {k} {key} not found: create it first with shoal {k} create {key} FILE",
                    k = T::KIND
                )
            })?;
        r.id = obj.id().to_string();
        r.name = obj.name().to_string();
        if r.target.is_empty() {
            r.target = r.name.clone();
        }
        if r.mode == 0 {
            r.mode = d::FILE_MODE;
        }
        if r.mode > 0o7777 {
            return Err(format!(
                "{}s: mode {:o} of {} {} is not a file mode",
                T::KIND,
                r.mode,
                T::KIND,
                r.name
            ));
        }
        let path = target_path::<T>(r)?;
        if !targets.insert(path.clone()) {
            return Err(format!(
                "{}s: two {}s are mounted at {path}",
                T::KIND,
                T::KIND
            ));
        }
    }
    Ok(())
}

/// Resolves a service's secret and config references against the store.
pub fn resolve_references(d: &StoreData, spec: &mut ServiceSpec) -> Result<(), String> {
    if let Some(c) = spec.container.as_mut() {
        resolve::<Secret>(d, c)?;
        resolve::<Config>(d, c)?;
    }
    Ok(())
}

/// Refuses a template whose secrets or configs were removed since it was
/// made (an old revision a rollback would return to).
pub fn check_present(d: &StoreData, template: Option<&PodTemplate>) -> Result<(), String> {
    let Some(c) = template.and_then(|t| t.container.as_ref()) else {
        return Ok(());
    };
    if let Some(r) = c.secrets.iter().find(|r| !d.secrets.contains_key(&r.id)) {
        return Err(format!("it uses secret {}, which was removed", r.name));
    }
    if let Some(r) = c.configs.iter().find(|r| !d.configs.contains_key(&r.id)) {
        return Err(format!("it uses config {}, which was removed", r.name));
    }
    Ok(())
}

/// The object as responses show it: a secret without its data.
pub fn redacted<T: FileObject>(o: &T) -> T {
    let mut o = o.clone();
    if T::SEALED {
        if let Some(s) = o.spec_mut().as_mut() {
            s.data.clear();
        }
    }
    o
}

/// The data as stored: sealed for secrets, as given for configs.
pub fn stored_data<T: FileObject>(
    key: &ClusterKey,
    spec: &FileObjectSpec,
) -> Result<Vec<u8>, Status> {
    if !T::SEALED {
        return Ok(spec.data.clone());
    }
    key.seal(&format!("{} {}", T::KIND, spec.name), &spec.data)
        .map_err(|e| Status::internal(e.to_string()))
}

/// Whether `data` is the object's content (opening a sealed secret).
pub fn same_data<T: FileObject>(key: &ClusterKey, o: &T, data: &[u8]) -> Result<bool, Status> {
    let stored = o.spec().map(|s| s.data.as_slice()).unwrap_or_default();
    if !T::SEALED {
        return Ok(stored == data);
    }
    let plain = key
        .open(&format!("{} {}", T::KIND, o.name()), stored)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(plain == data)
}

/// The error for a removal refused because services use the object.
pub fn in_use_error<T: FileObject>(o: &T, users: &[String]) -> Status {
    Status::failed_precondition(format!(
        "{k} {n} is in use by service{s} {list}: remove {them} or update {them} to stop using it first",
        k = T::KIND,
        n = o.name(),
        s = if users.len() == 1 { "" } else { "s" },
        list = users.join(", "),
        them = if users.len() == 1 { "it" } else { "them" },
    ))
}

/// The version an update or delete of `o` must expect.
pub fn expected_version<T: FileObject>(o: &T) -> u64 {
    version(o.meta())
}

/// The RPCs, shared by both kinds.
impl super::ControlApi {
    pub(super) async fn create_file_object<T: FileObject>(
        &self,
        spec: Option<FileObjectSpec>,
    ) -> Result<T, Status> {
        let mut spec = spec.ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        validate_spec::<T>(&spec).map_err(Status::invalid_argument)?;
        // Sealed once, outside the retry loop: every attempt writes the same bytes.
        spec.data = stored_data::<T>(&self.key, &spec)?;
        let now = now_ms();
        let obj = T::new(
            new_id(),
            Meta {
                version: 0,
                created_at: now,
                updated_at: now,
            },
            spec,
        );
        self.write(|d| {
            if T::all(d).values().any(|o| o.name() == obj.name()) {
                return Err(Status::already_exists(format!(
                    "{} {} already exists",
                    T::KIND,
                    obj.name()
                )));
            }
            Ok((vec![put(obj.clone(), 0)], ()))
        })
        .await?;
        tracing::info!(kind = T::KIND, name = %obj.name(), id = %obj.id(), "created");
        Ok(redacted(&obj))
    }

    /// Labels may change; the data must stay what it is (secrets and
    /// configs are immutable, as in Swarm: roll to a new name instead).
    pub(super) async fn update_file_object<T: FileObject>(
        &self,
        name: String,
        spec: Option<FileObjectSpec>,
    ) -> Result<T, Status> {
        let spec = spec.ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let key = self.key.clone();
        let updated = self
            .write(|d| {
                let current = find::<T>(d, &name)?;
                let stored = current.spec().cloned().unwrap_or_default();
                if !spec.name.is_empty() && spec.name != stored.name {
                    return Err(Status::invalid_argument(format!(
                        "name: a {} cannot be renamed (from {} to {})",
                        T::KIND,
                        stored.name,
                        spec.name
                    )));
                }
                if !same_data(&key, current, &spec.data)? {
                    return Err(Status::failed_precondition(format!(
                        "{k} {n}: its data cannot be changed ({k}s are immutable): create a {k} under a new name, point the services at it, then remove {n}",
                        k = T::KIND,
                        n = stored.name
                    )));
                }
                if spec.labels == stored.labels {
                    return Ok((vec![], current.clone()));
                }
                let mut next = current.clone();
                if let Some(s) = next.spec_mut().as_mut() {
                    s.labels = spec.labels.clone();
                }
                touch(next.meta_mut(), now_ms());
                Ok((vec![put(next.clone(), expected_version(current))], next))
            })
            .await?;
        Ok(redacted(&updated))
    }

    pub(super) async fn get_file_object<T: FileObject>(&self, name: String) -> Result<T, Status> {
        self.read(|d| find::<T>(d, &name).map(redacted)).await?
    }

    pub(super) async fn list_file_objects<T: FileObject>(&self) -> Result<Vec<T>, Status> {
        let mut all: Vec<T> = self
            .read(|d| T::all(d).values().map(redacted).collect())
            .await?;
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(all)
    }

    pub(super) async fn remove_file_object<T: FileObject>(
        &self,
        name: String,
    ) -> Result<String, Status> {
        let id = self
            .write(|d| {
                let o = find::<T>(d, &name)?;
                let users = users::<T>(d, o.id());
                if !users.is_empty() {
                    return Err(in_use_error(o, &users));
                }
                Ok((
                    vec![delete(T::OBJECT_KIND, o.id(), expected_version(o))],
                    o.id().to_string(),
                ))
            })
            .await?;
        tracing::info!(kind = T::KIND, name = %name, id = %id, "removed");
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Deployment, DeploymentSpec, Pod, PodTemplate, ReplicaSet};

    fn secret(id: &str, name: &str) -> Secret {
        Secret::new(
            id.into(),
            Meta::default(),
            FileObjectSpec {
                name: name.into(),
                data: b"sealed".to_vec(),
                ..Default::default()
            },
        )
    }

    fn template(secrets: &[&str]) -> Option<PodTemplate> {
        Some(PodTemplate {
            container: Some(ContainerSpec {
                image: "img".into(),
                secrets: secrets
                    .iter()
                    .map(|id| FileReference {
                        id: id.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn names_data_and_targets_are_checked() {
        let ok = |n: &str| {
            validate_spec::<Secret>(&FileObjectSpec {
                name: n.into(),
                data: b"x".to_vec(),
                ..Default::default()
            })
        };
        assert!(ok("db_password.v2").is_ok());
        assert!(ok("-x").unwrap_err().starts_with("name: \"-x\""));
        assert!(ok("a/b").is_err());
        let empty = validate_spec::<Config>(&FileObjectSpec {
            name: "c".into(),
            ..Default::default()
        });
        assert_eq!(empty.unwrap_err(), "data: config c is empty");
        let big = validate_spec::<Secret>(&FileObjectSpec {
            name: "s".into(),
            data: vec![0; d::SECRET_MAX_BYTES + 1],
            ..Default::default()
        });
        assert!(big.unwrap_err().contains("more than the 512000 allowed"));
    }

    #[test]
    fn references_resolve_to_ids_with_docker_defaults() {
        let mut d = StoreData::default();
        d.secrets.insert("s1".into(), secret("s1", "pw"));
        d.configs.insert(
            "c1".into(),
            Config::new(
                "c1".into(),
                Meta::default(),
                FileObjectSpec {
                    name: "app.conf".into(),
                    data: b"x".to_vec(),
                    ..Default::default()
                },
            ),
        );
        let mut spec = ServiceSpec {
            container: Some(ContainerSpec {
                secrets: vec![FileReference {
                    name: "pw".into(),
                    ..Default::default()
                }],
                configs: vec![FileReference {
                    name: "app.conf".into(),
                    target: "/etc/app.conf".into(),
                    mode: 0o440,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        resolve_references(&d, &mut spec).unwrap();
        let c = spec.container.as_ref().unwrap();
        assert_eq!(
            (c.secrets[0].id.as_str(), c.secrets[0].target.as_str()),
            ("s1", "pw")
        );
        assert_eq!(c.secrets[0].mode, 0o444);
        assert_eq!(c.secrets[0].container_path(true), "/run/secrets/pw");
        assert_eq!(c.configs[0].id, "c1");
        assert_eq!(c.configs[0].mode, 0o440);
        assert_eq!(c.configs[0].container_path(false), "/etc/app.conf");

        let mut missing = spec.clone();
        missing.container.as_mut().unwrap().secrets[0].name = "nope".into();
        let err = resolve_references(&d, &mut missing).unwrap_err();
        assert_eq!(
            err,
            "secrets: secret nope not found: create it first with shoal secret create nope FILE"
        );
        let mut escape = spec.clone();
        escape.container.as_mut().unwrap().secrets[0].target = "../etc/passwd".into();
        assert!(resolve_references(&d, &mut escape)
            .unwrap_err()
            .contains("must not contain '..'"));
        let mut twice = spec.clone();
        let c = twice.container.as_mut().unwrap();
        c.secrets.push(c.secrets[0].clone());
        assert_eq!(
            resolve_references(&d, &mut twice).unwrap_err(),
            "secrets: two secrets are mounted at /run/secrets/pw"
        );
    }

    #[test]
    fn a_secret_is_in_use_by_current_templates_and_by_revisions_with_pods() {
        let mut d = StoreData::default();
        d.secrets.insert("s1".into(), secret("s1", "pw"));
        assert!(users::<Secret>(&d, "s1").is_empty());

        // The current template of a service.
        d.deployments.insert(
            "d1".into(),
            Deployment {
                id: "d1".into(),
                spec: Some(DeploymentSpec {
                    name: "web".into(),
                    template: template(&["s1"]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(users::<Secret>(&d, "s1"), vec!["web"]);

        // The service moved to a revision without it, but an old pod remains.
        d.deployments
            .get_mut("d1")
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .template = template(&[]);
        d.replica_sets.insert(
            "r1".into(),
            ReplicaSet {
                id: "r1".into(),
                deployment_id: "d1".into(),
                template: template(&["s1"]),
                ..Default::default()
            },
        );
        assert!(users::<Secret>(&d, "s1").is_empty(), "no pod of r1 yet");
        d.put_pod(Pod {
            id: "p1".into(),
            deployment_id: "d1".into(),
            replica_set_id: "r1".into(),
            ..Default::default()
        });
        assert_eq!(users::<Secret>(&d, "s1"), vec!["web"]);

        // The service was removed; its pods are still stopping.
        d.deployments.clear();
        assert_eq!(
            users::<Secret>(&d, "s1"),
            vec!["d1 (removed; its pods are still stopping, try again shortly)"]
        );
        let err = in_use_error(&secret("s1", "pw"), &["web".into(), "api".into()]);
        assert_eq!(
            err.message(),
            "secret pw is in use by services web, api: remove them or update them to stop using it first"
        );
        d.remove_pod("p1");
        assert!(users::<Secret>(&d, "s1").is_empty());
        assert!(check_present(&d, template(&["s1"]).as_ref()).is_ok());
        d.secrets.clear();
        let mut gone = template(&["s1"]);
        gone.as_mut().unwrap().container.as_mut().unwrap().secrets[0].name = "pw".into();
        assert_eq!(
            check_present(&d, gone.as_ref()).unwrap_err(),
            "it uses secret pw, which was removed"
        );
        assert!(users::<Config>(&d, "s1").is_empty());
    }

    #[test]
    fn responses_never_carry_a_secrets_data_but_do_a_configs() {
        let key = ClusterKey::generate();
        let spec = FileObjectSpec {
            name: "pw".into(),
            data: b"hunter2".to_vec(),
            ..Default::default()
        };
        let sealed = stored_data::<Secret>(&key, &spec).unwrap();
        assert_ne!(sealed, b"hunter2");
        let s = Secret::new(
            "s".into(),
            Meta::default(),
            FileObjectSpec {
                data: sealed,
                ..spec.clone()
            },
        );
        assert!(same_data(&key, &s, b"hunter2").unwrap());
        assert!(!same_data(&key, &s, b"hunter3").unwrap());
        assert!(redacted(&s).spec.unwrap().data.is_empty());
        let c = Config::new("c".into(), Meta::default(), spec.clone());
        assert_eq!(stored_data::<Config>(&key, &spec).unwrap(), b"hunter2");
        assert_eq!(redacted(&c).spec.unwrap().data, b"hunter2");
    }
}
