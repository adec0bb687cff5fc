using UnityEngine;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>Unity helpers for finished lines.</summary>
    public static class NpcLineExtensions
    {
        /// <summary>
        /// Parses the structured payload into a [Serializable] class with JsonUtility, for example
        /// <c>line.GetStructured&lt;ShipAiLine&gt;()</c> with fields line, emotion and action. Returns default(T)
        /// when the line has no valid payload.
        /// </summary>
        public static T GetStructured<T>(this NpcLine line)
        {
            if (line == null || line.StructuredJson == null) return default(T);
            return JsonUtility.FromJson<T>(line.StructuredJson);
        }
    }
}
