//! The channel's locking script: a Taproot output whose key path nobody can spend and whose two
//! script leaves are written in miniscript.
//!
//! ```text
//! tr(musig(payer, payee), { and_v(v:pk(payee), pk(payer)),         commitments (payee closes)
//!                           and_v(v:pk(payer), after(expiry)) })   refund: the payer alone
//! ```
//!
//! The internal key is the MuSig2 aggregate of both keys ([`super::musig`]): the key path needs
//! both signatures, and is the cheap cooperative close. Without the other side, only a leaf
//! works: the payee can never take more than a payer-signed commitment gives it, and the payer
//! can never take anything back before `expiry` (an absolute block height).

use std::str::FromStr;

use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::taproot::{ControlBlock, LeafVersion, TapLeafHash, TapNodeHash};
use bitcoin::{Address, Network, ScriptBuf};
use miniscript::Descriptor;

use super::BtcChannelError;

/// Highest block height an `after()` accepts: heights are below 500,000,000 (BIP-65); above that
/// the number would be read as a Unix time.
pub const MAX_EXPIRY_HEIGHT: u32 = 499_999_999;

/// Who the channel is between and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelParties {
    /// The payer's x-only key (its device's BIP-86 internal key).
    pub payer: XOnlyPublicKey,
    /// The payee's x-only key.
    pub payee: XOnlyPublicKey,
    /// The block height from which the payer may take the whole output back.
    pub expiry_height: u32,
}

/// One leaf of the channel output, ready to spend.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The tapscript.
    pub script: ScriptBuf,
    /// BIP-341 leaf hash (what script-path signatures commit to).
    pub hash: TapLeafHash,
    /// The proof that the leaf is in the output's tree.
    pub control_block: ControlBlock,
}

/// The compiled channel script.
#[derive(Debug, Clone)]
pub struct ChannelScript {
    parties: ChannelParties,
    descriptor: Descriptor<XOnlyPublicKey>,
    internal_key: XOnlyPublicKey,
    merkle_root: Option<TapNodeHash>,
    cooperative: Leaf,
    refund: Leaf,
}

impl ChannelScript {
    /// Compiles the two leaves for `parties`.
    pub fn new(parties: ChannelParties) -> Result<Self, BtcChannelError> {
        if parties.payer == parties.payee {
            return Err(BtcChannelError::SameParty);
        }
        if parties.expiry_height == 0 || parties.expiry_height > MAX_EXPIRY_HEIGHT {
            return Err(BtcChannelError::BadExpiry(parties.expiry_height));
        }
        let ChannelParties {
            payer,
            payee,
            expiry_height,
        } = parties;
        let internal_key = super::musig::internal_key(&parties)?;
        let text = format!(
            "tr({internal_key},{{and_v(v:pk({payee}),pk({payer})),and_v(v:pk({payer}),after({expiry_height}))}})"
        );
        let descriptor = Descriptor::<XOnlyPublicKey>::from_str(&text)
            .map_err(|e| BtcChannelError::Script(e.to_string()))?;
        let Descriptor::Tr(tr) = &descriptor else {
            unreachable!("a tr() descriptor parses to Descriptor::Tr");
        };
        let spend_info = tr.spend_info();
        let mut leaves = tr.iter_scripts().map(|(_depth, miniscript)| {
            let script = miniscript.encode();
            let control_block = spend_info
                .control_block(&(script.clone(), LeafVersion::TapScript))
                .expect("every leaf of the tree has a control block");
            Leaf {
                hash: TapLeafHash::from_script(&script, LeafVersion::TapScript),
                script,
                control_block,
            }
        });
        let (cooperative, refund) = match (leaves.next(), leaves.next()) {
            (Some(cooperative), Some(refund)) => (cooperative, refund),
            _ => unreachable!("the descriptor has two leaves"),
        };
        Ok(Self {
            parties,
            internal_key: spend_info.internal_key(),
            merkle_root: spend_info.merkle_root(),
            descriptor,
            cooperative,
            refund,
        })
    }

    /// The parties and expiry.
    pub fn parties(&self) -> &ChannelParties {
        &self.parties
    }

    /// The miniscript descriptor (its string form is what a wallet would import to watch it).
    pub fn descriptor(&self) -> &Descriptor<XOnlyPublicKey> {
        &self.descriptor
    }

    /// The output script the funding transaction pays.
    pub fn script_pubkey(&self) -> ScriptBuf {
        self.descriptor.script_pubkey()
    }

    /// The channel output's address.
    pub fn address(&self, network: Network) -> Address {
        self.descriptor
            .address(network)
            .expect("tr() descriptors always have an address")
    }

    /// The Taproot internal key (the MuSig2 aggregate of payer and payee).
    pub fn internal_key(&self) -> XOnlyPublicKey {
        self.internal_key
    }

    /// The script tree's root.
    pub fn merkle_root(&self) -> Option<TapNodeHash> {
        self.merkle_root
    }

    /// The `payee & payer` leaf.
    pub fn cooperative_leaf(&self) -> &Leaf {
        &self.cooperative
    }

    /// The `payer & after(expiry)` leaf.
    pub fn refund_leaf(&self) -> &Leaf {
        &self.refund
    }
}

/// The BIP-86 output script of a device key (no script tree): where closes pay each side.
pub fn device_script_pubkey(key: XOnlyPublicKey) -> ScriptBuf {
    ScriptBuf::new_p2tr(&*super::SECP, key, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(byte: u8) -> XOnlyPublicKey {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let secret = bitcoin::secp256k1::SecretKey::from_slice(&[byte; 32]).unwrap();
        secret.x_only_public_key(&secp).0
    }

    #[test]
    fn leaves_name_the_right_keys_and_expiry() {
        let script = ChannelScript::new(ChannelParties {
            payer: key(1),
            payee: key(2),
            expiry_height: 1_000,
        })
        .unwrap();
        let coop = script.cooperative_leaf().script.to_asm_string();
        let refund = script.refund_leaf().script.to_asm_string();
        assert!(coop.contains(&key(2).to_string()) && coop.contains(&key(1).to_string()));
        assert!(refund.contains("OP_CLTV"), "{refund}");
        assert!(!refund.contains(&key(2).to_string()));
        assert!(script.script_pubkey().is_p2tr());
        assert!(
            script
                .address(Network::Regtest)
                .to_string()
                .starts_with("bcrt1p")
        );
    }

    #[test]
    fn nonsense_parameters_are_refused() {
        let same = ChannelParties {
            payer: key(1),
            payee: key(1),
            expiry_height: 10,
        };
        assert!(matches!(
            ChannelScript::new(same),
            Err(BtcChannelError::SameParty)
        ));
        let never = ChannelParties {
            payer: key(1),
            payee: key(2),
            expiry_height: 600_000_000,
        };
        assert!(matches!(
            ChannelScript::new(never),
            Err(BtcChannelError::BadExpiry(600_000_000))
        ));
    }
}
