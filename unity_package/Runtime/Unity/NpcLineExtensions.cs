using UnityEngine;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>Unity helpers for finished lines.</summary>
    public static class NpcLineExtensions
    {
        /// <summary>
        /// Parses the structured payload into a [Serializable] class with JsonUtility, for example
        /// <c>line.GetStructured&lt;ShipAiLine&gt;()</c> with fields line, emotion and action. Returns default(T)
        /// when the line has no valid payload, or when the payload is not a JSON object (a schema may allow a
        /// top-level array, which JsonUtility cannot read: use <see cref="NpcLine.StructuredJson"/> for that).
        /// </summary>
        public static T GetStructured<T>(this NpcLine line)
        {
            // NpcLine.Structured is null unless the payload is a valid JSON object; JsonUtility throws on the rest.
            if (line == null || line.Structured == null) return default(T);
            return JsonUtility.FromJson<T>(line.StructuredJson);
        }
    }
}
