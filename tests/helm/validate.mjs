// Validates manifests rendered by `helm template` offline, against the Kubernetes OpenAPI schemas
// that the npm package kubernetes-models (v5) compiles in, plus the Prometheus Operator CRDs
// (@kubernetes-models/prometheus-operator). LeaderWorkerSet has no model package: its pod
// templates are validated as core PodTemplateSpecs and its own fields against the v1 API
// (kubernetes-sigs/lws api/leaderworkerset/v1) by hand. A kind the chart starts rendering without
// a validator here is an error, so nothing goes unchecked silently.
//
// kubernetes-models checks types, enums, formats and required fields but, like the API server's
// non-strict mode, not unknown fields.
//
// Run from a directory whose node_modules holds kubernetes-models, @kubernetes-models/prometheus-
// operator and yaml (scripts/test_helm.sh copies this file into its npm cache for that):
//
//   node validate.mjs [--expect-kinds Kind,Kind] [--forbid-kinds Kind,Kind] rendered.yaml
//
// Prints one line per file and every problem found; exits 1 on any.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
// One module per class: the group indexes load every schema of the group (seconds).
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { PodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec";
import { Service } from "kubernetes-models/v1/Service";
import { Secret } from "kubernetes-models/v1/Secret";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { ObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";

// Metric names the dashboard must chart (issue 6, item 2); names are the exporters'.
const kDashboardMetrics = [
  "gemmaserve_generation_tokens_total",
  "gemmaserve_requests_total",
  "gemmaserve_time_to_first_token_seconds_bucket",
  "gemmaserve_inter_token_latency_seconds_bucket",
  "gemmaserve_requests_waiting",
  "gemmaserve_requests_running",
  "gemmaserve_kv_cache_usage_ratio",
  "gemmaserve_step_duration_seconds",
  "gemmaserve_moe_expert_tokens_total",
  "gemmaserve_moe_balancedness",
  "gemmaserve_moe_rank_tokens_total",
  "gemmaserve_worker_decode_graph_steps_total",
];

// Throws with kubernetes-models' message when obj does not match the class's schema.
function validateWith(Model) {
  return (obj) => new Model(obj).validate();
}

function validateLeaderWorkerSet(obj) {
  new ObjectMeta(obj.metadata ?? {}).validate();
  const spec = obj.spec ?? {};
  const problems = [];
  const checkKeys = (where, value, allowed) => {
    for (const key of Object.keys(value ?? {})) {
      if (!allowed.includes(key)) problems.push(`${where}.${key}: unknown field`);
    }
  };
  const checkInt = (where, value, min) => {
    if (value !== undefined && !(Number.isInteger(value) && value >= min)) {
      problems.push(`${where}: ${JSON.stringify(value)} is not an integer >= ${min}`);
    }
  };
  const checkEnum = (where, value, allowed) => {
    if (value !== undefined && !allowed.includes(value)) {
      problems.push(`${where}: ${JSON.stringify(value)} is not one of ${allowed.join(", ")}`);
    }
  };
  checkKeys("spec", spec, ["replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy", "networkConfig"]);
  checkInt("spec.replicas", spec.replicas, 0);
  checkEnum("spec.startupPolicy", spec.startupPolicy, ["LeaderCreated", "LeaderReady"]);
  const rollout = spec.rolloutStrategy;
  if (rollout !== undefined) {
    checkKeys("spec.rolloutStrategy", rollout, ["type", "rollingUpdateConfiguration"]);
    checkEnum("spec.rolloutStrategy.type", rollout.type, ["RollingUpdate"]);
    checkKeys("spec.rolloutStrategy.rollingUpdateConfiguration", rollout.rollingUpdateConfiguration,
              ["partition", "maxUnavailable", "maxSurge"]);
  }
  const lwt = spec.leaderWorkerTemplate;
  if (lwt === undefined || typeof lwt !== "object") {
    problems.push("spec.leaderWorkerTemplate: required");
  } else {
    checkKeys("spec.leaderWorkerTemplate", lwt, [
      "leaderTemplate", "workerTemplate", "size", "restartPolicy", "subGroupPolicy",
      "volumeClaimTemplates", "persistentVolumeClaimRetentionPolicy",
    ]);
    checkInt("spec.leaderWorkerTemplate.size", lwt.size, 1);
    checkEnum("spec.leaderWorkerTemplate.restartPolicy", lwt.restartPolicy,
              ["RecreateGroupOnPodRestart", "RecreateGroupAfterStart", "None"]);
    if (lwt.workerTemplate === undefined) problems.push("spec.leaderWorkerTemplate.workerTemplate: required");
    for (const name of ["leaderTemplate", "workerTemplate"]) {
      if (lwt[name] === undefined) continue;
      try {
        new PodTemplateSpec(lwt[name]).validate();
      } catch (e) {
        problems.push(`spec.leaderWorkerTemplate.${name} (PodTemplateSpec): ${e.message}`);
      }
    }
  }
  if (problems.length) throw new Error(problems.join("\n"));
}

const kValidators = {
  "v1/ConfigMap": validateWith(ConfigMap),
  "v1/Secret": validateWith(Secret),
  "v1/Service": validateWith(Service),
  "v1/ServiceAccount": validateWith(ServiceAccount),
  "apps/v1/Deployment": validateWith(Deployment),
  "apps/v1/StatefulSet": validateWith(StatefulSet),
  "networking.k8s.io/v1/NetworkPolicy": validateWith(NetworkPolicy),
  "policy/v1/PodDisruptionBudget": validateWith(PodDisruptionBudget),
  "monitoring.coreos.com/v1/ServiceMonitor": validateWith(ServiceMonitor),
  "monitoring.coreos.com/v1/PrometheusRule": validateWith(PrometheusRule),
  "leaderworkerset.x-k8s.io/v1/LeaderWorkerSet": validateLeaderWorkerSet,
};

// Rules the schemas leave to the API server's validation code, checked where cheap.
function checkNames(obj) {
  const problems = [];
  const name = obj.metadata?.name ?? "";
  const dns1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 253) {
    problems.push(`metadata.name ${JSON.stringify(name)} is not a DNS-1123 subdomain`);
  }
  if (obj.kind === "Service" && (!dns1035.test(name) || name.length > 63)) {
    problems.push(`Service name ${JSON.stringify(name)} is not a DNS-1035 label`);
  }
  for (const [key, value] of Object.entries(obj.metadata?.labels ?? {})) {
    if (typeof value !== "string" || value.length > 63) problems.push(`label ${key}: bad value ${JSON.stringify(value)}`);
  }
  return problems;
}

// Every pod template inside obj (Deployment, StatefulSet, LeaderWorkerSet).
function podTemplates(obj) {
  const lwt = obj.spec?.leaderWorkerTemplate;
  if (lwt) return [lwt.leaderTemplate, lwt.workerTemplate].filter(Boolean);
  return obj.spec?.template ? [obj.spec.template] : [];
}

function checkPodTemplate(template) {
  const problems = [];
  const volumes = new Set((template.spec?.volumes ?? []).map((v) => v.name));
  for (const c of template.spec?.containers ?? []) {
    const portNames = new Set((c.ports ?? []).map((p) => p.name));
    for (const p of c.ports ?? []) {
      const name = p.name ?? "";
      if (p.name !== undefined && (!/^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 15)) {
        problems.push(`container ${c.name}: port name ${JSON.stringify(p.name)} is not an IANA service name`);
      }
    }
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.has(m.name)) problems.push(`container ${c.name}: volumeMount ${m.name} has no volume`);
    }
    for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
      const port = c[probe]?.httpGet?.port;
      if (typeof port === "string" && !portNames.has(port)) {
        problems.push(`container ${c.name}: ${probe} names port ${port}, which the container lacks`);
      }
    }
  }
  return problems;
}

// The coordinator's internal port hands out the cluster layout and takes ranks: a NetworkPolicy
// rule that admits it must name its peers (a rule without "from" admits everyone), and a
// Secret's data must be base64.
function checkAccess(obj) {
  const problems = [];
  if (obj.kind === "NetworkPolicy") {
    (obj.spec?.ingress ?? []).forEach((rule, i) => {
      const ports = rule.ports ?? [];
      const admitsInternal = ports.length === 0 || ports.some((p) => p.port === "internal");
      const selectsCoordinator = obj.spec?.podSelector?.matchLabels?.["app.kubernetes.io/component"] === "coordinator";
      if (selectsCoordinator && admitsInternal && !(rule.from ?? []).length) {
        problems.push(`spec.ingress[${i}]: admits the internal port from anyone`);
      }
    });
  }
  if (obj.kind === "Secret") {
    for (const [key, value] of Object.entries(obj.data ?? {})) {
      if (typeof value !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) {
        problems.push(`data.${key}: not base64`);
      }
    }
  }
  return problems;
}

function checkDashboard(obj) {
  if (obj.kind !== "ConfigMap" || obj.metadata?.labels?.grafana_dashboard === undefined) return [];
  const problems = [];
  for (const [key, text] of Object.entries(obj.data ?? {})) {
    let dashboard;
    try {
      dashboard = JSON.parse(text);
    } catch (e) {
      problems.push(`data.${key}: not JSON: ${e.message}`);
      continue;
    }
    if (!Array.isArray(dashboard.panels) || dashboard.panels.length === 0) problems.push(`data.${key}: no panels`);
    const ids = dashboard.panels.map((p) => p.id);
    if (new Set(ids).size !== ids.length) problems.push(`data.${key}: duplicate panel ids`);
    for (const metric of kDashboardMetrics) {
      if (!text.includes(metric)) problems.push(`data.${key}: no panel queries ${metric}`);
    }
  }
  return problems;
}

function parseList(flag, args) {
  const i = args.indexOf(flag);
  if (i < 0) return [];
  const [value] = args.splice(i, 2).slice(1);
  return (value ?? "").split(",").filter(Boolean);
}

function validateFile(path, expectKinds, forbidKinds) {
  const problems = [];
  const kinds = [];
  const docs = parseAllDocuments(readFileSync(path, "utf8"), { uniqueKeys: true });
  docs.forEach((doc, index) => {
    for (const e of [...doc.errors, ...doc.warnings]) problems.push(`document ${index}: YAML: ${e.message}`);
    const obj = doc.toJS();
    if (obj === null || obj === undefined) return;
    const id = `${obj.kind ?? "?"} ${obj.metadata?.name ?? "?"}`;
    const validator = kValidators[`${obj.apiVersion}/${obj.kind}`];
    if (!validator) {
      problems.push(`${id}: no validator for ${obj.apiVersion} ${obj.kind} (add one to validate.mjs)`);
      return;
    }
    kinds.push(obj.kind);
    try {
      validator(obj);
    } catch (e) {
      for (const line of e.message.split("\n")) problems.push(`${id}: ${line}`);
    }
    const extra = [...checkNames(obj), ...podTemplates(obj).flatMap(checkPodTemplate), ...checkDashboard(obj),
                   ...checkAccess(obj)];
    for (const p of extra) problems.push(`${id}: ${p}`);
  });
  for (const kind of expectKinds) {
    if (!kinds.includes(kind)) problems.push(`expected a ${kind}, rendered none`);
  }
  for (const kind of forbidKinds) {
    if (kinds.includes(kind)) problems.push(`expected no ${kind}, rendered one`);
  }
  if (kinds.length === 0) problems.push("no objects rendered");
  return { kinds, problems };
}

const args = process.argv.slice(2);
const expectKinds = parseList("--expect-kinds", args);
const forbidKinds = parseList("--forbid-kinds", args);
if (args.length === 0) {
  console.error("usage: node validate.mjs [--expect-kinds K,K] [--forbid-kinds K,K] rendered.yaml...");
  process.exit(2);
}
let failed = 0;
for (const path of args) {
  const { kinds, problems } = validateFile(path, expectKinds, forbidKinds);
  if (problems.length) {
    failed++;
    console.log(`FAIL ${path}`);
    for (const p of problems) console.log(`  ${p}`);
  } else {
    const counts = {};
    for (const k of kinds) counts[k] = (counts[k] ?? 0) + 1;
    const summary = Object.entries(counts).map(([k, n]) => (n > 1 ? `${k}×${n}` : k)).join(", ");
    console.log(`ok   ${path}: ${kinds.length} objects valid (${summary})`);
  }
}
process.exit(failed ? 1 : 0);
