// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title LabelLib
/// @notice Provider labels are lower-case DNS labels, so that `{label}.khachapuri.xyz` is a valid host name,
/// minus the labels a browser would show as something else and those of the service's own hosts.
/// @dev The Rust validator (`khachapuri_chain::validate_label`) refuses exactly the same labels; both sides
/// test the same list of vectors.
library LabelLib {
    bytes32 private constant _WWW = keccak256("www");
    bytes32 private constant _API = keccak256("api");
    bytes32 private constant _GATEWAY = keccak256("gateway");
    bytes32 private constant _TUNNEL = keccak256("tunnel");
    bytes32 private constant _ADMIN = keccak256("admin");
    bytes32 private constant _APP = keccak256("app");
    bytes32 private constant _DOCS = keccak256("docs");
    bytes32 private constant _MAIL = keccak256("mail");
    bytes32 private constant _IPFS = keccak256("ipfs");
    bytes32 private constant _STATUS = keccak256("status");

    /// @notice Whether `label` is 1..63 bytes of `[a-z0-9-]`, not starting or ending with `-`, and without
    /// `-` at both its 3rd and 4th bytes: IDNA reserves those labels (RFC 5891 §4.2.3.1), `xn--` being
    /// punycode that a browser displays as another, look-alike name.
    function isValid(string memory label) internal pure returns (bool) {
        bytes memory b = bytes(label);
        uint256 n = b.length;
        if (n == 0 || n > 63 || b[0] == "-" || b[n - 1] == "-") return false;
        if (n >= 4 && b[2] == "-" && b[3] == "-") return false;
        for (uint256 i; i < n; ++i) {
            bytes1 c = b[i];
            if (!((c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-")) return false;
        }
        return true;
    }

    /// @notice Whether `label` names one of the service's own hosts: `www`, `api`, `gateway`, `tunnel`,
    /// `admin`, `app`, `docs`, `mail`, `ipfs`, `status`. (`dev` is not reserved: the local network's provider
    /// uses it.)
    function isReserved(string memory label) internal pure returns (bool) {
        bytes32 h = keccak256(bytes(label));
        return h == _WWW || h == _API || h == _GATEWAY || h == _TUNNEL || h == _ADMIN || h == _APP
            || h == _DOCS || h == _MAIL || h == _IPFS || h == _STATUS;
    }

    /// @notice The registry key of `label`.
    function node(string memory label) internal pure returns (bytes32) {
        return keccak256(bytes(label));
    }
}
