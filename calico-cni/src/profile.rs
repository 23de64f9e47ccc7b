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

/// The profiles `names`, in order, creating those that do not exist. `have` is what a read
/// of [`reads`] found (ADD reads them with the endpoint record, in one request); one
/// transaction when some are missing (each created only if still absent; a profile another
/// ADD created meanwhile is read again as it is).
pub fn ensure(store: &dyn Datastore, names: &[String], mut have: Vec<Profile>) -> Result<Vec<Profile>, Error> {
    for _ in 0..5 {
        let missing: Vec<Profile> =
            names.iter().filter(|n| !have.iter().any(|p| &p.name == *n)).map(|n| Profile::new(n)).collect();
        if missing.is_empty() {
            return Ok(have);
        }
        let compares: Vec<Compare> = missing.iter().map(|p| Compare::Absent(keys::profile_rules(&p.name))).collect();
        let ops: Vec<Op> =
            missing.iter().flat_map(Profile::records).map(|(key, value)| Op::Put { key, value }).collect();
        if store.txn(&compares, &ops)?.committed() {
            tracing::info!(profiles = ?missing.iter().map(|p| &p.name).collect::<Vec<_>>(), "created profiles with the defaults");
        }
        have = read(store, names)?;
    }
    Err(Error::Store(datastore::Error::Conflict { key: keys::profile_rules(&names[0]) }))
}

/// Those of the profiles `names` that exist, in the order of `names` (one read).
pub fn read(store: &dyn Datastore, names: &[String]) -> Result<Vec<Profile>, Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    gather(names, &store.read_many(&reads(names))?)
}

/// The reads that find the profiles `names`.
pub fn reads(names: &[String]) -> Vec<Read> {
    names
        .iter()
        .flat_map(|n| [keys::profile_rules(n), keys::profile_tags(n), keys::profile_labels(n)])
        .map(Read::Key)
        .collect()
}

/// Those of the profiles `names` that `found` (the answers to [`reads`]) holds, in the order
/// of `names`.
pub fn gather(names: &[String], found: &[Vec<datastore::KeyValue>]) -> Result<Vec<Profile>, Error> {
    let have = Profile::gather(found.iter().flatten().map(|kv| (kv.key.as_str(), kv.value.as_slice())))?;
    Ok(names.iter().filter_map(|n| have.iter().find(|p| &p.name == n).cloned()).collect())
}
