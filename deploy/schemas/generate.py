"""Generates the hand-written CRD JSON Schemas in this directory.

Run `python3 deploy/schemas/generate.py` after editing; scripts/validate-deploy.sh fails if the
committed JSON differs from what this prints. The schemas are a hand-written subset of each
upstream CRD's OpenAPI schema (upstream files named in each schema's description): the field
names follow upstream, the fields wafleet uses are typed and closed, other upstream fields are
accepted untyped. They are not copies of the upstream schemas.
"""
import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
DUR = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
S = {"type": "string"}
B = {"type": "boolean"}
I = {"type": "integer"}
I0 = {"type": "integer", "minimum": 0}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
ANY = {}
OBJ = {"type": "object"}
ARR = {"type": "array"}
QTY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[+-]?(\\d+(\\.\\d*)?|\\.\\d+)([eE][+-]?\\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$"}]}
NAMEREF = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {"name": S}}
def closed(props, required=(), **kw):
    d = {"type": "object", "additionalProperties": False, "properties": props}
    if required: d["required"] = list(required)
    d.update(kw)
    return d
LABEL_SELECTOR = closed({
    "matchLabels": STRMAP,
    "matchExpressions": {"type": "array", "items": closed({"key": S, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                                              "values": {"type": "array", "items": S}}, ["key", "operator"])}})
RESOURCES = closed({"limits": {"type": "object", "additionalProperties": QTY}, "requests": {"type": "object", "additionalProperties": QTY},
                    "claims": ARR})
def doc(api_version, kind, spec, note, spec_required=True):
    d = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{kind} ({api_version})",
        "description": note,
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"] + (["spec"] if spec_required else []),
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "namespace": S, "labels": STRMAP, "annotations": STRMAP}},
            "spec": spec,
            "status": OBJ,
        },
        "additionalProperties": False,
    }
    return d
def loose(names, detailed):
    """Every upstream field name at this level is accepted; the ones wafleet uses are typed."""
    props = {n: ANY for n in names}
    props.update(detailed)
    return props
NOTE = ("Hand-written subset of the upstream CRD's OpenAPI schema for offline validation "
        "(scripts/validate-deploy.sh). Field names follow the upstream CRD; the fields wafleet uses are typed "
        "and closed (unknown keys rejected); other upstream fields are accepted untyped. Upstream: ")
def write(path, d):
    os.makedirs(os.path.dirname(os.path.join(OUT, path)), exist_ok=True)
    with open(os.path.join(OUT, path), "w") as f:
        json.dump(d, f, indent=2, sort_keys=False); f.write("\n")

# ---------------- KEDA ----------------
hpa_rules = closed({"stabilizationWindowSeconds": I0, "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
                    "tolerance": QTY,
                    "policies": {"type": "array", "items": closed({"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
                                                                    "periodSeconds": {"type": "integer", "minimum": 1}}, ["type", "value", "periodSeconds"])}})
trigger = closed({
    "type": S, "name": S, "useCachedMetrics": B,
    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    "authenticationRef": closed({"name": S, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}}, ["name"]),
}, ["type", "metadata"])
trigger["allOf"] = [
    {"if": {"properties": {"type": {"const": "rabbitmq"}}},
     "then": {"properties": {"metadata": {
         "required": ["queueName", "mode", "value"],
         "properties": {"mode": {"enum": ["QueueLength", "MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"]},
                        "protocol": {"enum": ["auto", "http", "amqp"]},
                        "useRegex": {"enum": ["true", "false"]},
                        "operation": {"enum": ["sum", "max", "avg"]},
                        "excludeUnacknowledged": {"enum": ["true", "false"]},
                        "value": {"pattern": "^[0-9]+(\\.[0-9]+)?$"},
                        "pageSize": {"pattern": "^[1-9][0-9]*$"}},
         "propertyNames": {"enum": ["host", "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "protocol", "mode", "value",
                                    "activationValue", "queueName", "vhostName", "useRegex", "pageSize", "operation",
                                    "excludeUnacknowledged", "unsafeSsl", "timeout"]},
         "if": {"properties": {"useRegex": {"const": "true"}}, "required": ["useRegex"]},
         "then": {"required": ["protocol"], "properties": {"protocol": {"const": "http"}}}}}}},
    {"if": {"properties": {"type": {"const": "prometheus"}}},
     "then": {"properties": {"metadata": {
         "required": ["serverAddress", "query", "threshold"],
         "properties": {"threshold": {"pattern": "^[0-9]+(\\.[0-9]+)?$"}, "activationThreshold": {"pattern": "^[0-9]+(\\.[0-9]+)?$"},
                        "serverAddress": {"pattern": "^https?://"}},
         "propertyNames": {"enum": ["serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
                                    "ignoreNullValues", "unsafeSsl", "queryParameters", "authModes", "timeout"]}}}}},
]
so_spec = closed({
    "scaleTargetRef": closed({"apiVersion": S, "kind": S, "name": S, "envSourceContainerName": S}, ["name"]),
    "pollingInterval": I0, "cooldownPeriod": I0, "initialCooldownPeriod": I0, "idleReplicaCount": I0,
    "minReplicaCount": I0, "maxReplicaCount": {"type": "integer", "minimum": 1},
    "fallback": closed({"failureThreshold": {"type": "integer", "minimum": 1}, "replicas": I0,
                        "behavior": {"enum": ["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"]}},
                       ["failureThreshold", "replicas"]),
    "advanced": closed({"restoreToOriginalReplicaCount": B, "scalingModifiers": OBJ,
                        "horizontalPodAutoscalerConfig": closed({"name": S, "behavior": closed({"scaleUp": hpa_rules, "scaleDown": hpa_rules})})}),
    "triggers": {"type": "array", "minItems": 1, "items": trigger},
}, ["scaleTargetRef", "triggers"])
write("keda.sh/scaledobject_v1alpha1.json", doc("keda.sh/v1alpha1", "ScaledObject", so_spec,
      NOTE + "kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml (KEDA 2.x); trigger metadata keys follow the rabbitmq and prometheus scaler docs."))
ta_spec = closed(loose(["awsSecretManager", "azureKeyVault", "boundServiceAccountToken", "configMapTargetRef", "env",
                        "gcpSecretManager", "hashiCorpVault", "podIdentity", "secretTargetRef"], {
    "secretTargetRef": {"type": "array", "minItems": 1, "items": closed({"parameter": S, "name": S, "key": S}, ["parameter", "name", "key"])}}))
write("keda.sh/triggerauthentication_v1alpha1.json", doc("keda.sh/v1alpha1", "TriggerAuthentication", ta_spec,
      NOTE + "kedacore/keda config/crd/bases/keda.sh_triggerauthentications.yaml"))

# ---------------- Prometheus Operator ----------------
relabel = closed({"sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
                  "separator": S, "targetLabel": S, "regex": S, "modulus": I, "replacement": S,
                  "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
                                      "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                                      "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]}})
endpoint = closed(loose(["authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2", "filterRunning",
                         "followRedirects", "honorLabels", "honorTimestamps", "noProxy", "oauth2", "proxyConnectHeader",
                         "proxyFromEnvironment", "proxyUrl", "tlsConfig", "trackTimestampsStaleness", "targetPort", "scheme"], {
    "port": S, "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "params": {"type": "object", "additionalProperties": {"type": "array", "items": S}},
    "interval": {"type": "string", "pattern": DUR}, "scrapeTimeout": {"type": "string", "pattern": DUR},
    "honorLabels": B, "metricRelabelings": {"type": "array", "items": relabel}, "relabelings": {"type": "array", "items": relabel}}))
sm_spec = closed(loose(["attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "fallbackScrapeProtocol", "jobLabel",
                        "keepDroppedTargets", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "nativeHistogramBucketLimit",
                        "nativeHistogramMinBucketFactor", "podTargetLabels", "sampleLimit", "scrapeClass", "scrapeClassicHistograms",
                        "scrapeNativeHistograms", "scrapeProtocols", "selectorMechanism", "serviceDiscoveryRole", "targetLabels",
                        "targetLimit"], {
    "selector": LABEL_SELECTOR,
    "namespaceSelector": closed({"any": B, "matchNames": {"type": "array", "items": S}}),
    "jobLabel": S,
    "endpoints": {"type": "array", "minItems": 1, "items": endpoint}}), ["endpoints", "selector"])
write("monitoring.coreos.com/servicemonitor_v1.json", doc("monitoring.coreos.com/v1", "ServiceMonitor", sm_spec,
      NOTE + "prometheus-operator example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"))
pm_endpoint = closed(loose(["authorization", "basicAuth", "bearerTokenSecret", "enableHttp2", "filterRunning", "followRedirects",
                            "honorLabels", "honorTimestamps", "noProxy", "oauth2", "portNumber", "proxyConnectHeader",
                            "proxyFromEnvironment", "proxyUrl", "targetPort", "tlsConfig", "trackTimestampsStaleness"], {
    "port": S, "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "params": {"type": "object", "additionalProperties": {"type": "array", "items": S}},
    "interval": {"type": "string", "pattern": DUR}, "scrapeTimeout": {"type": "string", "pattern": DUR},
    "metricRelabelings": {"type": "array", "items": relabel}, "relabelings": {"type": "array", "items": relabel}}))
pm_spec = closed(loose(["attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "fallbackScrapeProtocol",
                        "keepDroppedTargets", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "nativeHistogramBucketLimit",
                        "nativeHistogramMinBucketFactor", "podTargetLabels", "sampleLimit", "scrapeClass", "scrapeClassicHistograms",
                        "scrapeNativeHistograms", "scrapeProtocols", "selectorMechanism", "targetLimit"], {
    "selector": LABEL_SELECTOR,
    "namespaceSelector": closed({"any": B, "matchNames": {"type": "array", "items": S}}),
    "jobLabel": S,
    "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": pm_endpoint}}), ["podMetricsEndpoints", "selector"])
write("monitoring.coreos.com/podmonitor_v1.json", doc("monitoring.coreos.com/v1", "PodMonitor", pm_spec,
      NOTE + "prometheus-operator example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"))
rule = closed({"alert": S, "record": S, "expr": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
               "for": {"type": "string", "pattern": DUR}, "keep_firing_for": {"type": "string", "pattern": DUR},
               "labels": STRMAP, "annotations": STRMAP}, ["expr"],
              oneOf=[{"required": ["alert"], "not": {"required": ["record"]}}, {"required": ["record"], "not": {"required": ["alert"]}}])
pr_spec = closed({"groups": {"type": "array", "items": closed({
    "name": {"type": "string", "minLength": 1}, "interval": {"type": "string", "pattern": DUR}, "limit": I0,
    "query_offset": {"type": "string", "pattern": DUR}, "partial_response_strategy": S, "labels": STRMAP,
    "rules": {"type": "array", "items": rule}}, ["name"])}})
write("monitoring.coreos.com/prometheusrule_v1.json", doc("monitoring.coreos.com/v1", "PrometheusRule", pr_spec,
      NOTE + "prometheus-operator example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"))

# ---------------- RabbitMQ operators ----------------
CLUSTER_REF = closed({"name": S, "namespace": S, "connectionSecret": NAMEREF})
rc_spec = closed(loose(["affinity", "delayStartSeconds", "image", "imagePullSecrets", "override", "persistence", "rabbitmq", "replicas",
                        "resources", "secretBackend", "service", "skipPostDeploySteps", "terminationGracePeriodSeconds", "tls",
                        "tolerations"], {
    "replicas": {"type": "integer", "minimum": 0},
    "image": S,
    "resources": RESOURCES,
    "persistence": closed({"storage": QTY, "storageClassName": S}),
    "service": closed({"type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]}, "annotations": STRMAP, "labels": STRMAP,
                       "ipFamilyPolicy": {"enum": ["SingleStack", "PreferDualStack", "RequireDualStack"]}}),
    "rabbitmq": closed({"additionalPlugins": {"type": "array", "maxItems": 100, "items": {"type": "string", "pattern": "^\\w+$", "maxLength": 100}},
                        "additionalConfig": {"type": "string", "maxLength": 100000}, "advancedConfig": S, "envConfig": S,
                        "erlangInetConfig": S}),
    "override": closed({"statefulSet": OBJ, "service": OBJ}),
}))
write("rabbitmq.com/rabbitmqcluster_v1beta1.json", doc("rabbitmq.com/v1beta1", "RabbitmqCluster", rc_spec,
      NOTE + "rabbitmq/cluster-operator config/crd/bases/rabbitmq.com_rabbitmqclusters.yaml"))
user_spec = closed({"tags": {"type": "array", "items": {"enum": ["management", "policymaker", "monitoring", "administrator"]}},
                    "importCredentialsSecret": NAMEREF, "limits": closed({"connections": I0, "channels": I0}),
                    "rabbitmqClusterReference": CLUSTER_REF}, ["rabbitmqClusterReference"])
write("rabbitmq.com/user_v1beta1.json", doc("rabbitmq.com/v1beta1", "User", user_spec,
      NOTE + "rabbitmq/messaging-topology-operator config/crd/bases/rabbitmq.com_users.yaml"))
perm_spec = closed({"vhost": S, "user": S, "userReference": NAMEREF,
                    "permissions": closed({"configure": S, "write": S, "read": S}, ["configure", "write", "read"]),
                    "rabbitmqClusterReference": CLUSTER_REF}, ["permissions", "rabbitmqClusterReference", "vhost"],
                   oneOf=[{"required": ["user"]}, {"required": ["userReference"]}])
write("rabbitmq.com/permission_v1beta1.json", doc("rabbitmq.com/v1beta1", "Permission", perm_spec,
      NOTE + "rabbitmq/messaging-topology-operator config/crd/bases/rabbitmq.com_permissions.yaml"))
pol_spec = closed({"name": S, "vhost": S, "pattern": S,
                   "applyTo": {"enum": ["queues", "classic_queues", "quorum_queues", "streams", "exchanges", "all"]},
                   "priority": I, "definition": {"type": "object", "minProperties": 1},
                   "rabbitmqClusterReference": CLUSTER_REF}, ["definition", "name", "pattern", "rabbitmqClusterReference"])
write("rabbitmq.com/policy_v1beta1.json", doc("rabbitmq.com/v1beta1", "Policy", pol_spec,
      NOTE + "rabbitmq/messaging-topology-operator config/crd/bases/rabbitmq.com_policies.yaml"))
vh_spec = closed({"name": S, "tags": {"type": "array", "items": S}, "tracing": B,
                  "defaultQueueType": {"enum": ["quorum", "classic", "stream"]}, "deletionPolicy": {"enum": ["delete", "retain"]},
                  "limits": closed({"connections": I0, "queues": I0}), "rabbitmqClusterReference": CLUSTER_REF},
                 ["name", "rabbitmqClusterReference"])
write("rabbitmq.com/vhost_v1beta1.json", doc("rabbitmq.com/v1beta1", "Vhost", vh_spec,
      NOTE + "rabbitmq/messaging-topology-operator config/crd/bases/rabbitmq.com_vhosts.yaml"))

# ---------------- CloudNativePG ----------------
role = closed({"name": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"}, "ensure": {"enum": ["present", "absent"]}, "comment": S,
               "login": B, "superuser": B, "bypassrls": B, "createdb": B, "createrole": B, "inherit": B, "replication": B,
               "connectionLimit": {"type": "integer", "minimum": -1}, "passwordSecret": NAMEREF, "disablePassword": B,
               "inRoles": {"type": "array", "items": S}, "validUntil": S}, ["name"])
cl_spec = closed(loose(["affinity", "backup", "bootstrap", "certificates", "description", "enablePDB", "enableSuperuserAccess", "env",
                        "envFrom", "ephemeralVolumeSource", "ephemeralVolumesSizeLimit", "externalClusters", "failoverDelay",
                        "imageCatalogRef", "imageName", "imagePullPolicy", "imagePullSecrets", "inheritedMetadata", "instances",
                        "livenessProbeTimeout", "logLevel", "managed", "maxSyncReplicas", "minSyncReplicas", "monitoring",
                        "nodeMaintenanceWindow", "plugins", "podSecurityContext", "postgresGID", "postgresUID", "postgresql",
                        "primaryUpdateMethod", "primaryUpdateStrategy", "priorityClassName", "probes", "projectedVolumeTemplate",
                        "replica", "replicationSlots", "resources", "schedulerName", "seccompProfile", "securityContext",
                        "serviceAccountName", "serviceAccountTemplate", "smartShutdownTimeout", "startDelay", "stopDelay", "storage",
                        "superuserSecret", "switchoverDelay", "tablespaces", "topologySpreadConstraints", "walStorage"], {
    "instances": {"type": "integer", "minimum": 1},
    "imageName": S,
    "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
    "enableSuperuserAccess": B,
    "postgresql": closed(loose(["enableAlterSystem", "extensions", "ldap", "pg_hba", "pg_ident", "promotionTimeout",
                                "shared_preload_libraries", "syncReplicaElectionConstraint", "synchronous"],
                               {"parameters": STRMAP})),
    "bootstrap": closed(loose(["recovery", "pg_basebackup"], {"initdb": closed(loose(
        ["builtinLocale", "dataChecksums", "encoding", "icuLocale", "icuRules", "import", "locale", "localeCType", "localeCollate",
         "localeProvider", "options", "postInitApplicationSQL", "postInitApplicationSQLRefs", "postInitSQL", "postInitSQLRefs",
         "postInitTemplateSQL", "postInitTemplateSQLRefs", "walSegmentSize"],
        {"database": S, "owner": S, "secret": NAMEREF}))})),
    "managed": closed({"roles": {"type": "array", "items": role}, "services": OBJ}),
    "storage": closed({"size": QTY, "storageClass": S, "resizeInUseVolumes": B, "pvcTemplate": OBJ}),
    "monitoring": closed(loose(["customQueriesConfigMap", "customQueriesSecret", "disableDefaultQueries", "metricsQueriesTTL",
                                "podMonitorMetricRelabelings", "podMonitorRelabelings", "tls"], {"enablePodMonitor": B})),
}), ["instances"])
write("postgresql.cnpg.io/cluster_v1.json", doc("postgresql.cnpg.io/v1", "Cluster", cl_spec,
      NOTE + "cloudnative-pg/cloudnative-pg config/crd/bases/postgresql.cnpg.io_clusters.yaml"))
