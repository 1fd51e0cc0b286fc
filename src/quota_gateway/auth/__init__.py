"""Access tokens: issuing, verifying (cached in process), revoking, and their REST endpoints."""

from .tokens import SCOPES, Principal, create_token, list_tokens, mask_token, revoke_token

__all__ = ["SCOPES", "Principal", "create_token", "list_tokens", "mask_token", "revoke_token"]
