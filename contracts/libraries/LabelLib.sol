// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title LabelLib
/// @notice Provider labels are lower-case DNS labels, so that `{label}.khachapuri.xyz` is a valid host name.
library LabelLib {
    /// @notice Whether `label` is 1..63 bytes of `[a-z0-9-]`, not starting or ending with `-`.
    function isValid(string memory label) internal pure returns (bool) {
        bytes memory b = bytes(label);
        uint256 n = b.length;
        if (n == 0 || n > 63 || b[0] == "-" || b[n - 1] == "-") return false;
        for (uint256 i; i < n; ++i) {
            bytes1 c = b[i];
            if (!((c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-")) return false;
        }
        return true;
    }

    /// @notice The registry key of `label`.
    function node(string memory label) internal pure returns (bytes32) {
        return keccak256(bytes(label));
    }
}
