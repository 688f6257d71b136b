"""The ``command`` vocabulary: PostgreSQL's own command tags (``CreateCommandTag`` in
``tcop/utility.c``), computed from pglast's JSON parse tree.

:data:`COMMANDS` is the closed vocabulary; a statement whose tag is not in it is reported
as ``"unknown"`` (the fidelity test over PostgreSQL's regression suite keeps that at 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Node = Mapping[str, Any]

OBJECT_NAMES: Mapping[str, str] = {
    "OBJECT_ACCESS_METHOD": "ACCESS METHOD",
    "OBJECT_AGGREGATE": "AGGREGATE",
    "OBJECT_CAST": "CAST",
    "OBJECT_COLLATION": "COLLATION",
    "OBJECT_CONVERSION": "CONVERSION",
    "OBJECT_DATABASE": "DATABASE",
    "OBJECT_DOMAIN": "DOMAIN",
    "OBJECT_DOMCONSTRAINT": "DOMAIN",
    "OBJECT_EVENT_TRIGGER": "EVENT TRIGGER",
    "OBJECT_EXTENSION": "EXTENSION",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE",
    "OBJECT_FUNCTION": "FUNCTION",
    "OBJECT_INDEX": "INDEX",
    "OBJECT_LANGUAGE": "LANGUAGE",
    "OBJECT_LARGEOBJECT": "LARGE OBJECT",
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPERATOR": "OPERATOR",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
    "OBJECT_AMOP": "OPERATOR FAMILY",
    "OBJECT_AMPROC": "OPERATOR FAMILY",
    "OBJECT_POLICY": "POLICY",
    "OBJECT_PROCEDURE": "PROCEDURE",
    "OBJECT_PUBLICATION": "PUBLICATION",
    "OBJECT_PUBLICATION_NAMESPACE": "PUBLICATION",
    "OBJECT_PUBLICATION_REL": "PUBLICATION",
    "OBJECT_ROLE": "ROLE",
    "OBJECT_ROUTINE": "ROUTINE",
    "OBJECT_RULE": "RULE",
    "OBJECT_SCHEMA": "SCHEMA",
    "OBJECT_SEQUENCE": "SEQUENCE",
    "OBJECT_SUBSCRIPTION": "SUBSCRIPTION",
    "OBJECT_STATISTIC_EXT": "STATISTICS",
    "OBJECT_TABCONSTRAINT": "TABLE",
    "OBJECT_TABLE": "TABLE",
    "OBJECT_TABLESPACE": "TABLESPACE",
    "OBJECT_TRANSFORM": "TRANSFORM",
    "OBJECT_TRIGGER": "TRIGGER",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_TYPE": "TYPE",
    "OBJECT_VIEW": "VIEW",
    "OBJECT_ATTRIBUTE": "TYPE",
    "OBJECT_COLUMN": "TABLE",
    "OBJECT_DEFAULT": "TABLE",
    "OBJECT_USER_MAPPING": "USER MAPPING",
    "OBJECT_PARAMETER_ACL": "PARAMETER",
}

# Statements whose tag does not depend on their contents.
_FIXED: Mapping[str, str] = {
    "InsertStmt": "INSERT",
    "DeleteStmt": "DELETE",
    "UpdateStmt": "UPDATE",
    "MergeStmt": "MERGE",
    "CreateSchemaStmt": "CREATE SCHEMA",
    "CreateStmt": "CREATE TABLE",
    "CreateTableSpaceStmt": "CREATE TABLESPACE",
    "DropTableSpaceStmt": "DROP TABLESPACE",
    "AlterTableSpaceOptionsStmt": "ALTER TABLESPACE",
    "CreateExtensionStmt": "CREATE EXTENSION",
    "AlterExtensionStmt": "ALTER EXTENSION",
    "AlterExtensionContentsStmt": "ALTER EXTENSION",
    "CreateFdwStmt": "CREATE FOREIGN DATA WRAPPER",
    "AlterFdwStmt": "ALTER FOREIGN DATA WRAPPER",
    "CreateForeignServerStmt": "CREATE SERVER",
    "AlterForeignServerStmt": "ALTER SERVER",
    "CreateUserMappingStmt": "CREATE USER MAPPING",
    "AlterUserMappingStmt": "ALTER USER MAPPING",
    "DropUserMappingStmt": "DROP USER MAPPING",
    "CreateForeignTableStmt": "CREATE FOREIGN TABLE",
    "ImportForeignSchemaStmt": "IMPORT FOREIGN SCHEMA",
    "TruncateStmt": "TRUNCATE TABLE",
    "CommentStmt": "COMMENT",
    "SecLabelStmt": "SECURITY LABEL",
    "CopyStmt": "COPY",
    "AlterDefaultPrivilegesStmt": "ALTER DEFAULT PRIVILEGES",
    "DefineStmt": "",  # by kind, below
    "CompositeTypeStmt": "CREATE TYPE",
    "CreateEnumStmt": "CREATE TYPE",
    "CreateRangeStmt": "CREATE TYPE",
    "AlterEnumStmt": "ALTER TYPE",
    "ViewStmt": "CREATE VIEW",
    "CreateFunctionStmt": "",  # function or procedure
    "IndexStmt": "CREATE INDEX",
    "RuleStmt": "CREATE RULE",
    "CreateSeqStmt": "CREATE SEQUENCE",
    "AlterSeqStmt": "ALTER SEQUENCE",
    "DoStmt": "DO",
    "CreatedbStmt": "CREATE DATABASE",
    "AlterDatabaseStmt": "ALTER DATABASE",
    "AlterDatabaseRefreshCollStmt": "ALTER DATABASE",
    "AlterDatabaseSetStmt": "ALTER DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "NotifyStmt": "NOTIFY",
    "ListenStmt": "LISTEN",
    "UnlistenStmt": "UNLISTEN",
    "LoadStmt": "LOAD",
    "CallStmt": "CALL",
    "ClusterStmt": "CLUSTER",
    "ExplainStmt": "EXPLAIN",
    "AlterSystemStmt": "ALTER SYSTEM",
    "VariableShowStmt": "SHOW",
    "DiscardStmt": "",  # by target
    "CreateTransformStmt": "CREATE TRANSFORM",
    "CreateTrigStmt": "CREATE TRIGGER",
    "CreateEventTrigStmt": "CREATE EVENT TRIGGER",
    "AlterEventTrigStmt": "ALTER EVENT TRIGGER",
    "CreatePLangStmt": "CREATE LANGUAGE",
    "CreateRoleStmt": "CREATE ROLE",
    "AlterRoleStmt": "ALTER ROLE",
    "AlterRoleSetStmt": "ALTER ROLE",
    "DropRoleStmt": "DROP ROLE",
    "DropOwnedStmt": "DROP OWNED",
    "ReassignOwnedStmt": "REASSIGN OWNED",
    "LockStmt": "LOCK TABLE",
    "ConstraintsSetStmt": "SET CONSTRAINTS",
    "CheckPointStmt": "CHECKPOINT",
    "ReindexStmt": "REINDEX",
    "CreateConversionStmt": "CREATE CONVERSION",
    "CreateCastStmt": "CREATE CAST",
    "CreateOpClassStmt": "CREATE OPERATOR CLASS",
    "CreateOpFamilyStmt": "CREATE OPERATOR FAMILY",
    "AlterOpFamilyStmt": "ALTER OPERATOR FAMILY",
    "AlterOperatorStmt": "ALTER OPERATOR",
    "AlterTypeStmt": "ALTER TYPE",
    "AlterTSDictionaryStmt": "ALTER TEXT SEARCH DICTIONARY",
    "AlterTSConfigurationStmt": "ALTER TEXT SEARCH CONFIGURATION",
    "CreatePolicyStmt": "CREATE POLICY",
    "AlterPolicyStmt": "ALTER POLICY",
    "CreateAmStmt": "CREATE ACCESS METHOD",
    "CreatePublicationStmt": "CREATE PUBLICATION",
    "AlterPublicationStmt": "ALTER PUBLICATION",
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",
    "AlterSubscriptionStmt": "ALTER SUBSCRIPTION",
    "DropSubscriptionStmt": "DROP SUBSCRIPTION",
    "AlterCollationStmt": "ALTER COLLATION",
    "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE",
    "CreateStatsStmt": "CREATE STATISTICS",
    "AlterStatsStmt": "ALTER STATISTICS",
    "DeallocateStmt": "DEALLOCATE",
    "DeclareCursorStmt": "DECLARE CURSOR",
    "ClosePortalStmt": "CLOSE CURSOR",
    "CreateDomainStmt": "CREATE DOMAIN",
    "AlterDomainStmt": "ALTER DOMAIN",
    "AlterFunctionStmt": "",  # function, procedure or routine
    "CreateTableAsStmt": "",  # table, materialized view, SELECT INTO
    "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
    "AlterTableMoveAllStmt": "",  # by object type
    "AlterObjectDependsStmt": "",
    "AlterObjectSchemaStmt": "",
    "AlterOwnerStmt": "",
    "RenameStmt": "",
    "AlterTableStmt": "",
    "DropStmt": "",
    "GrantStmt": "",
    "GrantRoleStmt": "",
    "TransactionStmt": "",
    "VariableSetStmt": "",
    "VacuumStmt": "",
    "FetchStmt": "",
    "SelectStmt": "",
}

_TRANSACTION: Mapping[str, str] = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
    "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}

_DEFINE: Mapping[str, str] = {
    "OBJECT_AGGREGATE": "CREATE AGGREGATE",
    "OBJECT_OPERATOR": "CREATE OPERATOR",
    "OBJECT_TYPE": "CREATE TYPE",
    "OBJECT_TSPARSER": "CREATE TEXT SEARCH PARSER",
    "OBJECT_TSDICTIONARY": "CREATE TEXT SEARCH DICTIONARY",
    "OBJECT_TSTEMPLATE": "CREATE TEXT SEARCH TEMPLATE",
    "OBJECT_TSCONFIGURATION": "CREATE TEXT SEARCH CONFIGURATION",
    "OBJECT_COLLATION": "CREATE COLLATION",
    "OBJECT_ACCESS_METHOD": "CREATE ACCESS METHOD",
}

_DISCARD: Mapping[str, str] = {
    "DISCARD_ALL": "DISCARD ALL",
    "DISCARD_PLANS": "DISCARD PLANS",
    "DISCARD_TEMP": "DISCARD TEMP",
    "DISCARD_SEQUENCES": "DISCARD SEQUENCES",
}


def _object(kind: str | None) -> str | None:
    return OBJECT_NAMES.get(kind or "")


def _derived_commands() -> frozenset[str]:
    tags: set[str] = {t for t in _FIXED.values() if t}
    tags.update(_TRANSACTION.values())
    tags.update(_DEFINE.values())
    tags.update(_DISCARD.values())
    for name in set(OBJECT_NAMES.values()):
        tags.update({f"DROP {name}", f"ALTER {name}"})
    tags.update(
        {
            "SELECT",
            "SELECT INTO",
            "SELECT FOR UPDATE",
            "SELECT FOR NO KEY UPDATE",
            "SELECT FOR SHARE",
            "SELECT FOR KEY SHARE",
            "CREATE TABLE AS",
            "CREATE MATERIALIZED VIEW",
            "CREATE FUNCTION",
            "CREATE PROCEDURE",
            "ALTER FUNCTION",
            "ALTER PROCEDURE",
            "ALTER ROUTINE",
            "GRANT",
            "REVOKE",
            "GRANT ROLE",
            "REVOKE ROLE",
            "SET",
            "RESET",
            "VACUUM",
            "ANALYZE",
            "FETCH",
            "MOVE",
            "DEALLOCATE ALL",
            "CLOSE CURSOR ALL",
            "unknown",
        }
    )
    return frozenset(tags)


def command_tag(node_type: str, body: Node) -> str:
    """The command tag of one parsed statement (``node_type`` is the JSON node name)."""
    fixed = _FIXED.get(node_type)
    if fixed:
        return fixed
    tag: str | None = None
    if node_type == "SelectStmt":
        tag = _select_tag(body)
    elif node_type == "TransactionStmt":
        tag = _TRANSACTION.get(body.get("kind", ""))
    elif node_type == "VariableSetStmt":
        tag = "RESET" if body.get("kind") in ("VAR_RESET", "VAR_RESET_ALL") else "SET"
    elif node_type == "DropStmt":
        name = _object(body.get("removeType"))
        tag = f"DROP {name}" if name else None
    elif node_type in ("AlterTableStmt", "AlterTableMoveAllStmt"):
        name = _object(body.get("objtype"))
        tag = f"ALTER {name}" if name else None
    elif node_type == "RenameStmt":
        kind = body.get("renameType")
        if kind in ("OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_ATTRIBUTE"):
            kind = body.get("relationType")
        name = _object(kind)
        tag = f"ALTER {name}" if name else None
    elif node_type in ("AlterObjectSchemaStmt", "AlterOwnerStmt", "AlterObjectDependsStmt"):
        name = _object(body.get("objectType"))
        tag = f"ALTER {name}" if name else None
    elif node_type == "GrantStmt":
        tag = "GRANT" if body.get("is_grant") else "REVOKE"
    elif node_type == "GrantRoleStmt":
        tag = "GRANT ROLE" if body.get("is_grant") else "REVOKE ROLE"
    elif node_type == "VacuumStmt":
        tag = "VACUUM" if body.get("is_vacuumcmd") else "ANALYZE"
    elif node_type == "FetchStmt":
        tag = "MOVE" if body.get("ismove") else "FETCH"
    elif node_type == "DefineStmt":
        tag = _DEFINE.get(body.get("kind", ""))
    elif node_type == "DiscardStmt":
        tag = _DISCARD.get(body.get("target", ""))
    elif node_type == "CreateFunctionStmt":
        tag = "CREATE PROCEDURE" if body.get("is_procedure") else "CREATE FUNCTION"
    elif node_type == "AlterFunctionStmt":
        tag = {"OBJECT_PROCEDURE": "ALTER PROCEDURE", "OBJECT_ROUTINE": "ALTER ROUTINE"}.get(
            body.get("objtype", ""), "ALTER FUNCTION"
        )
    elif node_type == "CreateTableAsStmt":
        if body.get("is_select_into"):
            tag = "SELECT INTO"
        elif body.get("objtype") == "OBJECT_MATVIEW":
            tag = "CREATE MATERIALIZED VIEW"
        else:
            tag = "CREATE TABLE AS"
    return tag if tag and tag in COMMANDS else "unknown"


def _select_tag(body: Node) -> str:
    if body.get("intoClause"):
        return "SELECT INTO"
    locking = body.get("lockingClause")
    if locking:
        strength = locking[0].get("LockingClause", {}).get("strength", "")
        return {
            "LCS_FORKEYSHARE": "SELECT FOR KEY SHARE",
            "LCS_FORSHARE": "SELECT FOR SHARE",
            "LCS_FORNOKEYUPDATE": "SELECT FOR NO KEY UPDATE",
        }.get(strength, "SELECT FOR UPDATE")
    return "SELECT"


#: Every command the analyzer reports.
COMMANDS: frozenset[str] = _derived_commands()

#: Commands that do not change data or schema (they may still change session state).
READ_ONLY_COMMANDS: frozenset[str] = frozenset(
    {
        "SELECT",
        "SHOW",
        "SET",
        "RESET",
        "BEGIN",
        "START TRANSACTION",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "EXPLAIN",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
        "DEALLOCATE ALL",
        "DECLARE CURSOR",
        "FETCH",
        "MOVE",
        "CLOSE CURSOR",
        "CLOSE CURSOR ALL",
        "LISTEN",
        "UNLISTEN",
        "DISCARD ALL",
        "DISCARD PLANS",
        "DISCARD TEMP",
        "DISCARD SEQUENCES",
        "SET CONSTRAINTS",
        "DO",
        "COPY",
    }
)

#: Commands after which the schema catalog may be out of date.
SCHEMA_CHANGING_PREFIXES: tuple[str, ...] = (
    "CREATE ",
    "ALTER ",
    "DROP ",
    "COMMENT",
    "SELECT INTO",
    "GRANT",
    "REVOKE",
    "IMPORT FOREIGN SCHEMA",
    "REFRESH MATERIALIZED VIEW",
    "SECURITY LABEL",
    "REASSIGN OWNED",
    "DROP OWNED",
)
