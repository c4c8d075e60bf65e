//! Keystore file behaviour: round trip, wrong passphrase, corruption, file mode, no plaintext.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use m2m_wallet::{
    B256, DeviceMetadata, DeviceSeed, EvmAddress, KdfParams, Keystore, KeystoreError, Network,
    Passphrase, SchnorrKey, SeedLength, Signer,
};

fn passphrase(text: &str) -> Passphrase {
    Passphrase::new(text.to_string()).unwrap()
}

fn metadata() -> DeviceMetadata {
    DeviceMetadata {
        network: Network::Regtest,
        owner: Some(
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
                .parse::<EvmAddress>()
                .unwrap(),
        ),
        created_at_unix: 1_790_000_000,
    }
}

fn create(path: &Path) -> Keystore {
    let seed = DeviceSeed::generate(SeedLength::Words24).unwrap();
    Keystore::create(
        path,
        &passphrase("correct horse battery"),
        KdfParams::default(),
        metadata(),
        seed,
    )
    .unwrap()
}

#[test]
fn round_trip_keeps_seed_keys_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    let created = create(&path);
    let opened = Keystore::open(&path, &passphrase("correct horse battery")).unwrap();
    assert_eq!(*opened.backup_words(), *created.backup_words());
    assert_eq!(opened.addresses(), created.addresses());
    assert_eq!(opened.metadata(), &metadata());
    let digest = B256::repeat_byte(0x42);
    assert_eq!(
        opened.sign_evm_digest(&digest).unwrap(),
        created.sign_evm_digest(&digest).unwrap()
    );
    assert_eq!(
        opened.taproot_internal_key(),
        created.taproot_internal_key()
    );
    opened
        .sign_schnorr(&[1; 32], SchnorrKey::ScriptPath)
        .unwrap();
}

#[test]
fn restored_seed_gives_the_known_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    let seed = DeviceSeed::from_phrase(
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    )
    .unwrap();
    let meta = DeviceMetadata {
        network: Network::Bitcoin,
        owner: None,
        created_at_unix: 0,
    };
    Keystore::create(
        &path,
        &passphrase("correct horse battery"),
        KdfParams::default(),
        meta,
        seed,
    )
    .unwrap();
    let opened = Keystore::open(&path, &passphrase("correct horse battery")).unwrap();
    let addresses = opened.addresses();
    assert_eq!(
        addresses.bitcoin,
        "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
    );
    assert_eq!(
        addresses.ethereum,
        "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    );
}

#[test]
fn wrong_passphrase_is_reported_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    create(&path);
    let before = fs::read(&path).unwrap();
    let err = Keystore::open(&path, &passphrase("incorrect horse")).unwrap_err();
    assert!(matches!(err, KeystoreError::WrongPassphrase(_)), "{err}");
    assert!(err.to_string().contains("wrong passphrase"));
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no stray files"
    );
}

#[test]
fn corruption_is_told_apart_from_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    create(&path);
    let good = fs::read(&path).unwrap();
    let open = || Keystore::open(&path, &passphrase("correct horse battery")).unwrap_err();

    // Every single-byte flip after the magic is detected as corruption (or a version mismatch).
    for index in [9, 12, 20, good.len() / 2, good.len() - 40, good.len() - 1] {
        let mut damaged = good.clone();
        damaged[index] ^= 0x01;
        fs::write(&path, &damaged).unwrap();
        let err = open();
        assert!(
            matches!(
                err,
                KeystoreError::Corrupted { .. } | KeystoreError::UnsupportedVersion { .. }
            ),
            "byte {index}: {err}"
        );
    }
    fs::write(&path, &good[..good.len() - 10]).unwrap();
    assert!(matches!(open(), KeystoreError::Corrupted { .. }));
    fs::write(&path, b"hello, not a keystore").unwrap();
    assert!(matches!(open(), KeystoreError::NotAKeystore(_)));
    fs::remove_file(&path).unwrap();
    assert!(matches!(open(), KeystoreError::NotFound(_)));
}

#[test]
fn file_is_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    create(&path);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&path).unwrap();
    let seed = DeviceSeed::generate(SeedLength::Words12).unwrap();
    let err = Keystore::create(
        &path,
        &passphrase("another passphrase"),
        KdfParams::default(),
        metadata(),
        seed,
    )
    .unwrap_err();
    assert!(matches!(err, KeystoreError::AlreadyExists(_)));
    assert_eq!(fs::read(&path).unwrap(), before);

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Keystore::open(&path, &passphrase("correct horse battery")).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn weak_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    let seed = || DeviceSeed::generate(SeedLength::Words12).unwrap();
    let weak = KdfParams {
        memory_kib: 1024,
        ..KdfParams::default()
    };
    assert!(matches!(
        Keystore::create(
            &path,
            &passphrase("correct horse battery"),
            weak,
            metadata(),
            seed()
        ),
        Err(KeystoreError::WeakKdf(_))
    ));
    assert!(matches!(
        Keystore::create(
            &path,
            &passphrase("short"),
            KdfParams::default(),
            metadata(),
            seed()
        ),
        Err(KeystoreError::BadPassphrase(_))
    ));
    assert!(matches!(
        Passphrase::new("\n".into()),
        Err(KeystoreError::BadPassphrase(_))
    ));
    assert!(!path.exists());
}

#[test]
fn file_holds_no_seed_or_key_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wallet.keystore");
    let keystore = create(&path);
    let bytes = fs::read(&path).unwrap();
    let words = keystore.backup_words();
    let seed = DeviceSeed::from_phrase(&words).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    // Single words can occur by chance ("memory" is both a BIP-39 word and a header field), so
    // look for any two consecutive seed words: that cannot appear in a JSON header or ciphertext.
    let list: Vec<&str> = words.split(' ').collect();
    for pair in list.windows(2) {
        assert!(
            !text.contains(&pair.join(" ")),
            "two seed words in a row in the keystore"
        );
    }
    assert!(!contains(&bytes, words.as_bytes()));
    let secrets = m2m_wallet_secrets(&seed);
    for secret in &secrets {
        assert!(!contains(&bytes, secret), "key bytes found in keystore");
        assert!(!text.contains(&hex(secret)), "key hex found in keystore");
    }
}

/// The 64-byte BIP-39 seed: the root of every key. Recomputed here through bip39 itself.
fn m2m_wallet_secrets(seed: &DeviceSeed) -> Vec<Vec<u8>> {
    let mnemonic = bip39::Mnemonic::parse(seed.words().as_str()).unwrap();
    vec![mnemonic.to_seed("").to_vec(), mnemonic.to_entropy()]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
