#!/usr/bin/env python3
"""Writes the Grafana dashboards in this folder, one per `metrics_naming`, from one description
(the namings differ in metric and label names only). Run after editing:
    python3 dashboards/generate.py          # rewrite the JSON files
    python3 dashboards/generate.py --check  # exit 1 when a JSON file is out of date
The queries are checked against what sonde exports: by a unit test (names and labels, every
naming: src/export/dashboards.rs) and against a live Prometheus (tests/compose.rs)."""
import json
import os
import sys

NAMINGS = {
    "semconv": dict(
        srv="http_server_request_duration_seconds",
        srv_req="http_server_request_body_size_bytes",
        srv_resp="http_server_response_body_size_bytes",
        cli="http_client_request_duration_seconds",
        cli_req="http_client_request_body_size_bytes",
        cli_resp="http_client_response_body_size_bytes",
        method="http_request_method",
        status="http_response_status_code",
        addr="server_address",
        port="server_port",
        rpc_srv="rpc_server_call_duration_seconds",
        rpc_cli="rpc_client_call_duration_seconds",
        rpc_status="rpc_response_status_code",
        rpc_ok="OK",
        namespace=True,
    ),
    "beyla-v1": dict(
        srv="http_server_duration_seconds",
        srv_req="http_server_request_size_bytes",
        srv_resp=None,
        cli="http_client_duration_seconds",
        cli_req="http_client_request_size_bytes",
        cli_resp=None,
        method="http_request_method",
        status="http_response_status_code",
        addr="server_address",
        port="server_port",
        rpc_srv="rpc_server_duration_seconds",
        rpc_cli="rpc_client_duration_seconds",
        rpc_status="rpc_grpc_status_code",
        rpc_ok="0",
        namespace=True,
    ),
}
NAMINGS["beyla-v0"] = dict(
    NAMINGS["beyla-v1"],
    method="http_method",
    status="http_status_code",
    addr="net_peer_name",
    port="net_peer_port",
    namespace=False,
)

FILES = {
    "semconv": "sonde-red.json",
    "beyla-v1": "sonde-red-beyla-v1.json",
    "beyla-v0": "sonde-red-beyla-v0.json",
}
RI = "$__rate_interval"


def dashboard(naming):
    n = NAMINGS[naming]
    sel = 'service_name=~"$service"'
    if n["namespace"]:
        sel += ', service_namespace=~"$namespace"'
    sel += ', container_name=~"$container"'
    svc = "service_namespace, service_name" if n["namespace"] else "service_name"

    def rate(metric, by, extra=""):
        s = sel + (", " + extra if extra else "")
        return f"sum by ({by}) (rate({metric}{{{s}}}[{RI}]))"

    def ratio(metric, by, bad):
        return f"{rate(metric + '_count', by, bad)}\n/\n{rate(metric + '_count', by)}"

    def quantiles(metric, by):
        return [
            (f"histogram_quantile({q}, {rate(metric + '_bucket', by + ', le')})", f"p{int(q * 100)} {{{{{by.split(', ')[-1]}}}}}")
            for q in (0.5, 0.95, 0.99)
        ]

    def avg(metric, by):
        return f"{rate(metric + '_sum', by)}\n/\n{rate(metric + '_count', by)}"

    panels = []
    y = [0]

    def row(title):
        panels.append({"type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
        y[0] += 1

    def panel(title, targets, unit, w=8, kind="timeseries", x=None, description=""):
        # Panels flow left to right, 24 columns wide.
        row_panels = [p for p in panels if p["gridPos"]["y"] == y[0] and p["type"] != "row"]
        x = sum(p["gridPos"]["w"] for p in row_panels)
        if x + w > 24:
            y[0] += 8
            x = 0
        p = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": w, "x": x, "y": y[0]},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [
                {"refId": chr(ord("A") + i), "expr": e, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${datasource}"},
                 **({"format": "table", "instant": True} if kind == "table" else {})}
                for i, (e, legend) in enumerate(targets)
            ],
        }
        if kind == "table":
            p["options"] = {"sortBy": [{"displayName": "Value", "desc": True}]}
        panels.append(p)

    def next_row():
        y[0] += 8

    srv, cli = n["srv"], n["cli"]
    row("HTTP server")
    panel("Request rate by service", [(rate(srv + "_count", svc), "{{service_name}}")], "reqps")
    panel("Error ratio (5xx) by service",
          [(ratio(srv, svc, f'{n["status"]}=~"5.."'), "{{service_name}}")], "percentunit")
    panel("Request rate by container",
          [(rate(srv + "_count", "container_name"), "{{container_name}}")], "reqps")
    panel("Latency (p50, p95, p99)", quantiles(srv, svc), "s", w=12)
    panel("Request rate by status", [(rate(srv + "_count", f'service_name, {n["status"]}'),
                                      "{{service_name}} {{" + n["status"] + "}}")], "reqps", w=12)
    next_row()
    panel("Top routes by request rate",
          [(f'topk(10, {rate(srv + "_count", "service_name, " + n["method"] + ", http_route")})', "")],
          "reqps", w=12, kind="table")
    panel("Slowest routes (p99)",
          [(f'topk(10, histogram_quantile(0.99, {rate(srv + "_bucket", "service_name, http_route, le")}))', "")],
          "s", w=12, kind="table")
    next_row()
    sizes = [(avg(n["srv_req"], "service_name"), "request {{service_name}}")]
    if n["srv_resp"]:
        sizes.append((avg(n["srv_resp"], "service_name"), "response {{service_name}}"))
    panel("Average body size", sizes, "bytes", w=12)
    sizes = [(f"histogram_quantile(0.95, {rate(n['srv_req'] + '_bucket', 'service_name, le')})",
              "request p95 {{service_name}}")]
    if n["srv_resp"]:
        sizes.append((f"histogram_quantile(0.95, {rate(n['srv_resp'] + '_bucket', 'service_name, le')})",
                      "response p95 {{service_name}}"))
    panel("Body size p95", sizes, "bytes", w=12)
    next_row()

    row("HTTP client (outgoing calls)")
    dest = f'service_name, {n["addr"]}, {n["port"]}'
    panel("Call rate by destination",
          [(rate(cli + "_count", dest), "{{service_name}} → {{" + n["addr"] + "}}:{{" + n["port"] + "}}")], "reqps")
    panel("Error ratio (5xx or no response)",
          [(ratio(cli, svc, f'{n["status"]}=~"5..|"'), "{{service_name}}")], "percentunit",
          description='Calls answered 5xx, or that got no response (error_type="_OTHER").')
    panel("Latency (p50, p95, p99)", quantiles(cli, svc), "s")
    next_row()

    row("gRPC")
    m = f'service_name, rpc_method, {n["rpc_status"]}'
    panel("Server calls by method and status",
          [(rate(n["rpc_srv"] + "_count", m), "{{rpc_method}} {{" + n["rpc_status"] + "}}")], "reqps")
    panel("Server error ratio (status not OK)",
          [(ratio(n["rpc_srv"], "service_name, rpc_method", f'{n["rpc_status"]}!="{n["rpc_ok"]}"'),
            "{{service_name}} {{rpc_method}}")], "percentunit")
    panel("Server latency by method (p50, p95, p99)", quantiles(n["rpc_srv"], "service_name, rpc_method"), "s")
    panel("Client calls by method and status",
          [(rate(n["rpc_cli"] + "_count", m), "{{rpc_method}} {{" + n["rpc_status"] + "}}")], "reqps", w=12)
    panel("Client latency by method (p50, p95, p99)", quantiles(n["rpc_cli"], "service_name, rpc_method"), "s", w=12)
    next_row()

    row("sonde (agent health)")
    panel("Instrumented processes", [("sum(sonde_instrumented_processes)", "processes"),
                                     ("sum(sonde_uprobe_links)", "uprobe links")], "short", w=6)
    panel("Requests seen / lost", [("sum(rate(sonde_events_total[$__rate_interval]))", "seen"),
                                   ("sum(rate(sonde_events_lost_total[$__rate_interval]))", "lost")],
          "reqps", w=6)
    panel("Attach errors and skipped binaries",
          [("sum(increase(sonde_attach_errors_total[$__rate_interval]))", "attach errors"),
           ("sum by (reason) (increase(sonde_skipped_binaries_total[$__rate_interval]))", "skipped: {{reason}}")],
          "short", w=6)
    panel("OTLP export errors and drops",
          [("sum by (signal) (rate(sonde_otlp_export_errors_total[$__rate_interval]))", "errors {{signal}}"),
           ("sum by (signal) (rate(sonde_otlp_dropped_total[$__rate_interval]))", "dropped {{signal}}")],
          "short", w=6)
    next_row()
    panel("Agents by version", [("count by (version) (sonde_build_info)", "{{version}}")], "short",
          w=24, kind="table")

    def var(name, label, query):
        return {
            "name": name, "label": label, "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name},
            "definition": query,
            "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "refresh": 2, "sort": 1,
        }

    variables = [{
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0,
    }]
    variables.append(var("service", "service", "label_values(service_name)"))
    if n["namespace"]:
        variables.append(var("namespace", "namespace", "label_values(service_namespace)"))
    variables.append(var("container", "container", "label_values(container_name)"))
    title = "sonde: RED metrics" + ("" if naming == "semconv" else f" (metrics_naming {naming})")
    return {
        "uid": "sonde-red" + ("" if naming == "semconv" else "-" + naming),
        "title": title,
        "description": f"Rate, errors and duration from sonde (metrics_naming: {naming}). "
                       "Generated by dashboards/generate.py.",
        "tags": ["sonde", "red", naming],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    stale = []
    for naming, file in FILES.items():
        text = json.dumps(dashboard(naming), indent=2, ensure_ascii=False) + "\n"
        path = os.path.join(here, file)
        if "--check" in sys.argv:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(file)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("out of date (run python3 dashboards/generate.py):", ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
