//! The endpoint's security profiles: netconf `profiles`, default the network's name. A
//! profile that does not exist yet is created with Calico's defaults ([`Profile::new`]) at
//! ADD, before anything is set up, so the endpoint is never attached to a missing profile.
//! Profiles are shared, so a failed ADD leaves them (as Calico did).

use datastore::{Compare, Datastore, Op, Read};
use model::keys;
use model::profile::{is_valid_name, Profile};

use crate::context::Context;
use crate::Error;

/// The profiles of this ADD's endpoint, each checked to be a valid name.
pub fn wanted(ctx: &Context) -> Result<Vec<String>, Error> {
    let profiles = ctx.conf.profiles();
    if let Some(bad) = profiles.iter().find(|p| !is_valid_name(p)) {
        let field = if ctx.conf.profiles.is_some() { "profiles" } else { "name" };
        return Err(cni::Error::InvalidConfig {
            field: field.into(),
            reason: format!(
                "{bad:?} cannot name a profile (letters, digits, '.', '_' and '-'); set `profiles` to name valid ones"
            ),
        }
        .into());
    }
    Ok(profiles)
}

/// Creates those of `names` that do not exist: one read, and one transaction when some are
/// missing (each created only if still absent; a profile another ADD created meanwhile is
/// kept as it is).
pub fn ensure(store: &dyn Datastore, names: &[String]) -> Result<(), Error> {
    if names.is_empty() {
        return Ok(());
    }
    for _ in 0..5 {
        let reads: Vec<Read> = names.iter().map(|n| Read::Key(keys::profile_rules(n))).collect();
        let found = store.read_many(&reads)?;
        let missing: Vec<Profile> =
            names.iter().zip(found).filter(|(_, kv)| kv.is_empty()).map(|(n, _)| Profile::new(n)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let compares: Vec<Compare> = missing.iter().map(|p| Compare::Absent(keys::profile_rules(&p.name))).collect();
        let ops: Vec<Op> =
            missing.iter().flat_map(Profile::records).map(|(key, value)| Op::Put { key, value }).collect();
        if store.txn(&compares, &ops)?.committed() {
            tracing::info!(profiles = ?missing.iter().map(|p| &p.name).collect::<Vec<_>>(), "created profiles with the defaults");
            return Ok(());
        }
    }
    Err(Error::Store(datastore::Error::Conflict { key: keys::profile_rules(&names[0]) }))
}
