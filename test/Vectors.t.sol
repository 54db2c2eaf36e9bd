// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

import {Escrow} from "../contracts/Escrow.sol";
import {TestUSDC} from "../contracts/TestUSDC.sol";
import {TUNNEL_MARKER} from "../contracts/interfaces/IResolver.sol";

/// @notice The protocol's test vectors (test/vectors/protocol.json, written by the Rust implementation and
/// checked by its `vectors` test) recomputed by a second, independent implementation: Solidity's own
/// `abi.encode`, `keccak256` and `ecrecover`, and the deployed Escrow's EIP-712 domain. Payer tokens, spec
/// terms and receipts are signed off chain in this domain, so the two sides must agree to the bit.
contract VectorsTest is Test {
    string internal json;

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    function setUp() public {
        json = vm.readFile(string.concat(vm.projectRoot(), "/test/vectors/protocol.json"));
    }

    function _separator() internal returns (bytes32) {
        vm.chainId(vm.parseJsonUint(json, ".domain.chainId"));
        address at = vm.parseJsonAddress(json, ".domain.verifyingContract");
        deployCodeTo("Escrow.sol:Escrow", abi.encode(address(new TestUSDC()), 1 days), at);
        (, string memory name, string memory version, uint256 chainId, address verifying,,) =
            Escrow(at).eip712Domain();
        assertEq(name, vm.parseJsonString(json, ".domain.name"));
        assertEq(version, vm.parseJsonString(json, ".domain.version"));
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256(bytes(version)), chainId, verifying)
        );
    }

    function _signer(bytes32 digest, string memory key) internal view returns (address) {
        bytes memory sig = vm.parseJsonBytes(json, key);
        assertEq(sig.length, 65, "signatures are 65 bytes r || s || v");
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        return ecrecover(digest, v, r, s);
    }

    function _digest(bytes32 separator, bytes32 structHash) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", separator, structHash));
    }

    function test_domainSeparatorIsTheEscrows() public {
        assertEq(_separator(), vm.parseJsonBytes32(json, ".domain.separator"));
    }

    /// @dev The Resolver's `server` record of a provider behind a tunnel: a file-level constant, in no ABI.
    function test_tunnelMarker() public view {
        assertEq(TUNNEL_MARKER, vm.parseJsonString(json, ".records.tunnelMarker"));
    }

    function test_payerToken() public {
        bytes32 typeHash = keccak256(
            "PayerToken(address provider,string spec,uint256 maxPrice,uint64 expiry,bytes32 session)"
        );
        assertEq(typeHash, vm.parseJsonBytes32(json, ".typeHashes.PayerToken"));
        bytes32 structHash = keccak256(
            abi.encode(
                typeHash,
                vm.parseJsonAddress(json, ".payerToken.provider"),
                keccak256(bytes(vm.parseJsonString(json, ".payerToken.spec"))),
                vm.parseJsonUint(json, ".payerToken.maxPrice"),
                uint64(vm.parseJsonUint(json, ".payerToken.expiry")),
                vm.parseJsonBytes32(json, ".payerToken.session")
            )
        );
        bytes32 digest = _digest(_separator(), structHash);
        assertEq(digest, vm.parseJsonBytes32(json, ".payerToken.signingHash"));
        assertEq(_signer(digest, ".payerToken.signature"), vm.parseJsonAddress(json, ".payerToken.payer"));
    }

    function test_receipt() public {
        bytes32 typeHash = keccak256(
            "Receipt(address provider,address payer,string spec,uint256 price,uint64 sequence,bytes32 requestDigest,bytes32 responseDigest)"
        );
        assertEq(typeHash, vm.parseJsonBytes32(json, ".typeHashes.Receipt"));
        bytes memory preimage = abi.encode(
            vm.parseJsonString(json, ".receipt.request.method"),
            vm.parseJsonString(json, ".receipt.request.pathAndQuery"),
            keccak256(bytes(vm.parseJsonString(json, ".receipt.request.body")))
        );
        assertEq(preimage, vm.parseJsonBytes(json, ".receipt.requestDigestPreimage"));
        bytes32 requestDigest = keccak256(preimage);
        assertEq(requestDigest, vm.parseJsonBytes32(json, ".receipt.requestDigest"));
        bytes32 responseDigest = keccak256(
            abi.encode(
                vm.parseJsonUint(json, ".receipt.response.status"),
                keccak256(bytes(vm.parseJsonString(json, ".receipt.response.body")))
            )
        );
        assertEq(responseDigest, vm.parseJsonBytes32(json, ".receipt.responseDigest"));
        bytes32 structHash = keccak256(
            abi.encode(
                typeHash,
                vm.parseJsonAddress(json, ".receipt.provider"),
                vm.parseJsonAddress(json, ".receipt.payer"),
                keccak256(bytes(vm.parseJsonString(json, ".receipt.spec"))),
                vm.parseJsonUint(json, ".receipt.price"),
                uint64(vm.parseJsonUint(json, ".receipt.sequence")),
                requestDigest,
                responseDigest
            )
        );
        bytes32 digest = _digest(_separator(), structHash);
        assertEq(digest, vm.parseJsonBytes32(json, ".receipt.signingHash"));
        assertEq(_signer(digest, ".receipt.signature"), vm.parseJsonAddress(json, ".receipt.provider"));
    }

    /// @dev A `kr2.` receipt: its struct hash is a leaf, OpenZeppelin's `MerkleProof` leads it to the group's
    /// root, and the provider signed `ReceiptGroup(bytes32 root)`: what a contract verifying receipts would do.
    function test_receiptGroup() public {
        bytes32 typeHash = keccak256("ReceiptGroup(bytes32 root)");
        assertEq(typeHash, vm.parseJsonBytes32(json, ".typeHashes.ReceiptGroup"));
        bytes32 root = vm.parseJsonBytes32(json, ".receiptGroup.root");
        bytes32 digest = _digest(_separator(), keccak256(abi.encode(typeHash, root)));
        assertEq(digest, vm.parseJsonBytes32(json, ".receiptGroup.signingHash"));
        assertEq(_signer(digest, ".receiptGroup.signature"), vm.parseJsonAddress(json, ".receipt.provider"));
        for (uint256 i; i < 3; ++i) {
            string memory at = string.concat(".receiptGroup.receipts[", vm.toString(i), "]");
            bytes32 leaf = keccak256(
                abi.encode(
                    vm.parseJsonBytes32(json, ".typeHashes.Receipt"),
                    vm.parseJsonAddress(json, ".receipt.provider"),
                    vm.parseJsonAddress(json, ".receipt.payer"),
                    keccak256(bytes(vm.parseJsonString(json, ".receipt.spec"))),
                    vm.parseJsonUint(json, ".receipt.price"),
                    uint64(vm.parseJsonUint(json, string.concat(at, ".sequence"))),
                    vm.parseJsonBytes32(json, ".receipt.requestDigest"),
                    vm.parseJsonBytes32(json, ".receipt.responseDigest")
                )
            );
            assertEq(leaf, vm.parseJsonBytes32(json, string.concat(at, ".leaf")));
            bytes32[] memory proof = vm.parseJsonBytes32Array(json, string.concat(at, ".proof"));
            assertTrue(MerkleProof.verify(proof, root, leaf), "the proof leads to the signed root");
        }
    }

    function test_specTerms() public {
        bytes32 typeHash = keccak256(
            "SpecTerms(string program,string entry,bytes32 envDigest,string provider,address owner,uint256 maxPrice,uint64 memoryBytes,uint64 timeoutMs,uint64 outputBytes,bytes32 termsDigest,uint256 spendCap,uint64 spendPeriod)"
        );
        assertEq(typeHash, vm.parseJsonBytes32(json, ".typeHashes.SpecTerms"));
        string memory spec = vm.parseJsonString(json, ".spec.json");
        // The environment's digest: keccak256 of its canonical JSON (keys sorted, no spaces).
        bytes32 envDigest =
            keccak256(bytes(string.concat('{"GREETING":"', vm.parseJsonString(spec, ".env.GREETING"), '"}')));
        assertEq(envDigest, vm.parseJsonBytes32(json, ".spec.envDigest"));
        bytes32 termsDigest = keccak256(bytes(vm.parseJsonString(spec, ".terms")));
        assertEq(termsDigest, vm.parseJsonBytes32(json, ".spec.termsDigest"));
        // Every member encodes to one word, so the encoding is the concatenation of two halves (one
        // `abi.encode` of all thirteen is too deep for the legacy code generator).
        bytes memory head = abi.encode(
            typeHash,
            keccak256(bytes(vm.parseJsonString(spec, ".program"))),
            keccak256(bytes(vm.parseJsonString(spec, ".entry"))),
            envDigest,
            keccak256(bytes(vm.parseJsonString(spec, ".provider"))),
            vm.parseJsonAddress(spec, ".owner"),
            vm.parseJsonUint(spec, ".maxPrice")
        );
        bytes memory tail = abi.encode(
            uint64(vm.parseJsonUint(spec, ".limits.memoryBytes")),
            uint64(vm.parseJsonUint(spec, ".limits.timeoutMs")),
            uint64(vm.parseJsonUint(spec, ".limits.outputBytes")),
            termsDigest,
            vm.parseJsonUint(spec, ".spendCap.amount"),
            uint64(vm.parseJsonUint(spec, ".spendCap.periodSeconds"))
        );
        bytes32 structHash = keccak256(bytes.concat(head, tail));
        bytes32 digest = _digest(_separator(), structHash);
        assertEq(digest, vm.parseJsonBytes32(json, ".spec.signingHash"));
        bytes memory sig = vm.parseJsonBytes(spec, ".signature");
        assertEq(sig, vm.parseJsonBytes(json, ".spec.signature"));
        assertEq(_signer(digest, ".spec.signature"), vm.parseJsonAddress(spec, ".owner"));
    }

    /// @dev The `kl1.` grant with which a spec's owner reads its logs at a provider.
    function test_logsAccess() public {
        bytes32 typeHash = keccak256("LogsAccess(address provider,string spec,uint64 expiry)");
        assertEq(typeHash, vm.parseJsonBytes32(json, ".typeHashes.LogsAccess"));
        bytes32 structHash = keccak256(
            abi.encode(
                typeHash,
                vm.parseJsonAddress(json, ".logsAccess.provider"),
                keccak256(bytes(vm.parseJsonString(json, ".logsAccess.spec"))),
                uint64(vm.parseJsonUint(json, ".logsAccess.expiry"))
            )
        );
        bytes32 digest = _digest(_separator(), structHash);
        assertEq(digest, vm.parseJsonBytes32(json, ".logsAccess.signingHash"));
        assertEq(_signer(digest, ".logsAccess.signature"), vm.parseJsonAddress(json, ".logsAccess.owner"));
    }
}
